"""The request path, free of any transport: engine, fair queue, batcher, runtime, pre- and post-processing,
results, attention and the answer cache. It imports nothing else of the service."""
