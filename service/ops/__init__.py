"""Beside the layers: settings, metrics, tracing, logs, the token check, transport counters, sockets,
CPUs and memory, workers, the health probe, and the process that assembles them all."""
