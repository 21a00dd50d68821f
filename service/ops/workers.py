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

import ctypes
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
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client import multiprocess as prometheus_multiprocess

from service.core.errors import StartupError
from service.ops.cpus import available_cpus
from service.ops.memory import memory_limit_bytes, process_bytes, processes_that_fit
from service.ops.scrape import MetricsEndpoint
from service.ops.sockets import bind, check_port_free
from service.versions.store import load_spec

if TYPE_CHECKING:
    from service.ops.settings import Settings

log = logging.getLogger(__name__)

READY = re.compile(r"READY port=(\d+)")
PR_SET_PDEATHSIG = 1  # linux/prctl.h
# a worker on CPU holds two sessions of the model: one for batches side by side, one for a lone batch
SESSIONS_PER_WORKER = 2


def _reserve_port(host: str, port: int, flag: str = "--port") -> socket.socket:
    """A bound (not listening) SO_REUSEPORT socket: it fixes the port the workers will share.

    Any process of the same user may join a SO_REUSEPORT port, so a second group (or the orphans of
    one) would silently share the port with this one: a bind without SO_REUSEPORT first proves that
    nothing listens there. StartupError when something does."""
    check_port_free(host, port, flag)
    return bind(host, port, socket.SO_REUSEPORT, flag)


def follow_parent(parent_pid: int) -> None:
    """Have the kernel send this worker SIGTERM (a drain) when its parent dies, however it dies, and
    StartupError when the parent is already gone."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise StartupError(f"--parent-pid: prctl failed ({os.strerror(ctypes.get_errno())})")
    if os.getppid() != parent_pid:  # it died before the signal was asked for
        raise StartupError(f"--parent-pid {parent_pid}: the parent process is gone")


def check_capacity(settings: Settings, cpus: int, memory_bytes: int | None, model_bytes: int) -> None:
    """StartupError unless the machine holds settings.workers workers: each needs a CPU for its
    event loop and batches, and the memory for its own sessions of the model."""
    if settings.workers > cpus:
        raise StartupError(
            f"--workers {settings.workers}: this process may use {cpus} CPUs, and each worker needs one "
            f"for its event loop and its batches; at most {cpus} workers fit"
        )
    if memory_bytes is None:
        return
    per_worker = process_bytes(model_bytes, SESSIONS_PER_WORKER)
    fitting = processes_that_fit(memory_bytes, per_worker)
    if settings.workers > fitting:
        raise StartupError(
            f"--workers {settings.workers}: each worker needs about {per_worker / 2**20:.0f} MiB "
            f"(the model's {model_bytes / 2**20:.0f} MiB in {SESSIONS_PER_WORKER} sessions, and the "
            f"process), and the memory limit is {memory_bytes / 2**20:.0f} MiB: at most "
            f"{fitting} workers fit"
        )


def worker_flags(settings: Settings, port: int, http_port: int) -> list[str]:
    """Flags appended to a worker's command line (later flags win): the group's ports, its share of
    the CPUs."""
    share = max(1, available_cpus() // settings.workers)
    flags = ["--workers", "1", "--worker-of", str(settings.workers), "--reuse-port", "--port", str(port)]
    flags += ["--http-port", str(http_port)]
    flags += ["--parent-pid", str(os.getpid())]
    flags += ["--metrics-port", "-1"]
    if not settings.lone_batch_threads:
        flags += ["--lone-batch-threads", str(share)]
    if not settings.max_concurrent_batches:
        flags += ["--max-concurrent-batches", str(share)]
    return flags


def run_group(settings: Settings, argv: list[str]) -> int:
    """Start the workers, serve their summed metrics, wait for a signal, drain them all."""
    spec = load_spec(
        settings.model_dir,
        settings.model_name,
        settings.model_version,
        settings.variant,
        settings.provider.value,
    )
    check_capacity(settings, available_cpus(), memory_limit_bytes(), spec.onnx_path.stat().st_size)
    reserved = [_reserve_port(settings.host, settings.port)]
    http_port = -1
    if settings.http_port >= 0:
        reserved.append(_reserve_port(settings.host, settings.http_port, "--http-port"))
        http_port = reserved[-1].getsockname()[1]
    metrics_dir = tempfile.mkdtemp(prefix="sentiment-metrics-")
    port = reserved[0].getsockname()[1]
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    flags = worker_flags(settings, port, http_port)
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
        for sock in reserved:
            sock.close()
        metrics_port = None
        if settings.metrics_port >= 0:
            registry = CollectorRegistry()
            prometheus_multiprocess.MultiProcessCollector(registry, path=metrics_dir)  # type: ignore[no-untyped-call]
            endpoint = MetricsEndpoint(
                registry, settings.metrics_host, settings.metrics_port, settings.metrics_token()
            )
            metrics_port = endpoint.port
        shown_http = None if http_port < 0 else http_port
        print(f"READY port={port} metrics_port={metrics_port} http_port={shown_http}", flush=True)
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
        for sock in reserved:
            sock.close()
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
