"""--workers N: N server processes on one port, one metrics endpoint, one drain.

The parent process starts N workers (`python -m service` again, with --workers 1 and --reuse-port),
each with its own event loop, batcher and ONNX Runtime sessions, all listening on the same port
with SO_REUSEPORT. The kernel spreads connections, not calls, among them: one client channel sticks
to one worker, many channels (or a per-call balancer in front, as in docker-compose.yml) use all.
This is for models so fast that one Python event loop, not the runtime, is the limit.

The parent serves the workers' metrics summed (prometheus-client's multiprocess mode), prints the
READY line once every worker is serving, forwards SIGTERM and SIGINT to all of them, and exits 0
only when every worker drained and exited 0. If a worker dies on its own, the others are stopped
and the parent exits 1, so that whatever supervises it restarts the group.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from types import FrameType

from prometheus_client import CollectorRegistry
from prometheus_client import multiprocess as prometheus_multiprocess

from service.config import Settings
from service.cpus import available_cpus
from service.metrics import MetricsEndpoint

log = logging.getLogger(__name__)

READY = re.compile(r"READY port=(\d+)")


def _reserve_port(host: str, port: int) -> socket.socket:
    """A bound (not listening) SO_REUSEPORT socket: it fixes the port the workers will share."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def worker_flags(settings: Settings, port: int) -> list[str]:
    """Flags appended to a worker's command line (later flags win): its share of the CPUs."""
    share = max(1, available_cpus() // settings.workers)
    flags = ["--workers", "1", "--worker-of", str(settings.workers), "--reuse-port", "--port", str(port)]
    flags += ["--metrics-port", "-1"]
    if not settings.lone_batch_threads:
        flags += ["--lone-batch-threads", str(share)]
    if not settings.max_concurrent_batches:
        flags += ["--max-concurrent-batches", str(share)]
    return flags


def run_group(settings: Settings, argv: list[str]) -> int:
    """Start the workers, serve their summed metrics, wait for a signal, drain them all."""
    metrics_dir = tempfile.mkdtemp(prefix="sentiment-metrics-")
    reserved = _reserve_port(settings.host, settings.port)
    port = reserved.getsockname()[1]
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    flags = worker_flags(settings, port)
    command = [sys.executable, "-m", "service", *argv, *flags]
    log.info(
        "starting %d workers on port %d (%d CPUs available), each with %s",
        settings.workers,
        port,
        available_cpus(),
        " ".join(flags),
    )
    workers: list[subprocess.Popen[str]] = []
    stopping = threading.Event()

    def forward(signum: int, frame: FrameType | None) -> None:
        stopping.set()
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    endpoint = None
    try:
        for _ in range(settings.workers):
            worker = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
            workers.append(worker)
            assert worker.stdout is not None
            line = worker.stdout.readline()
            if not READY.search(line):
                log.error("a worker did not start (exit %s)", worker.wait())
                forward(signal.SIGTERM, None)
                return 1
        reserved.close()
        metrics_port = None
        if settings.metrics_port >= 0:
            registry = CollectorRegistry()
            prometheus_multiprocess.MultiProcessCollector(registry, path=metrics_dir)  # type: ignore[no-untyped-call]
            endpoint = MetricsEndpoint(registry, settings.metrics_host, settings.metrics_port)
            metrics_port = endpoint.port
        print(f"READY port={port} metrics_port={metrics_port}", flush=True)
        codes = _wait(workers, stopping, metrics_dir)
        failed = [code for code in codes if code != 0]
        if failed:
            log.error("workers exited with %s", codes)
            return 1
        log.info("all %d workers drained and exited 0", len(workers))
        return 0
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
            if worker.stdout is not None:
                worker.stdout.close()
        if endpoint is not None:
            endpoint.close()
        reserved.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _wait(workers: list[subprocess.Popen[str]], stopping: threading.Event, metrics_dir: str) -> list[int]:
    """Exit codes of every worker; the first to die unasked stops the others."""
    codes: dict[int, int] = {}
    while len(codes) < len(workers):
        for index, worker in enumerate(workers):
            if index in codes:
                continue
            try:
                codes[index] = worker.wait(0.2)
            except subprocess.TimeoutExpired:
                continue
            prometheus_multiprocess.mark_process_dead(worker.pid, metrics_dir)  # type: ignore[no-untyped-call]
            if not stopping.is_set():
                log.error(
                    "worker %d (pid %d) exited with %d: stopping the others", index, worker.pid, codes[index]
                )
                stopping.set()
                for other in workers:
                    if other.poll() is None:
                        other.send_signal(signal.SIGTERM)
    return [codes[i] for i in range(len(workers))]
