"""Real servers on 127.0.0.1 and free ports: in their own processes (stopped by their PID), or in the
test's event loop with a runtime the test holds, fails or watches; and waiting for conditions with a
deadline, never for a while."""

from __future__ import annotations

import asyncio
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from prometheus_client.parser import text_string_to_metric_families

from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from sentiment_client.pb.sentiment.v1 import sentiment_pb2_grpc

READY = re.compile(r"READY port=(\d+) metrics_port=(\d+|None) http_port=(\d+|None)")
PREDICT = "sentiment.v1.SentimentService/Predict"
# how long a test waits for something that happens at once on an idle machine: long enough that only
# a hang ends it, on a busy machine too; it is a bound against hangs, not a speed target
PATIENCE_S = 120.0

T = TypeVar("T")


@dataclass
class RunningServer:
    process: subprocess.Popen[str]
    port: int
    metrics_port: int | None
    log_path: Path
    http_port: int | None = None

    @property
    def http(self) -> str:
        """The HTTP front door's base URL."""
        assert self.http_port is not None, "this server was started with --http-port -1"
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self, timeout: float = PATIENCE_S) -> int:
        """SIGTERM, and its exit code once it has drained; one that does not exit in time is killed
        (with its workers, by their PIDs) and fails the test."""
        try:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                kill(self.process)
                raise AssertionError(
                    f"the server did not exit {timeout:.0f} s after SIGTERM; killed"
                ) from None
        finally:
            if self.process.stdout is not None:
                self.process.stdout.close()


def descendants(pid: int) -> list[int]:
    """The PIDs of a process's children, theirs, and so on (read from /proc)."""
    found: list[int] = []
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:  # gone already
        return found
    for child in map(int, children):
        found += [child, *descendants(child)]
    return found


def kill(process: subprocess.Popen[str]) -> None:
    """SIGKILL a process and whatever it started, each by its PID, and reap it."""
    for pid in [*descendants(process.pid), process.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(30)


# the tests measure the model path: every text runs (tests/e2e/test_cache.py turns the cache on)
NO_CACHE = {"SENTIMENT_CACHE_ENTRIES": "0"}


def launch(model_root: Path, tmp_path: Path, *flags: str, env: dict[str, str] | None = None) -> RunningServer:
    """Start `python -m service` and wait for its READY line; fails with the server's log."""
    log_path = tmp_path / f"server-{time.monotonic_ns()}.log"
    args = [
        sys.executable,
        "-m",
        "service",
        "--model-dir",
        str(model_root),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--metrics-host",
        "127.0.0.1",
        "--metrics-port",
        "0",
        "--http-port",
        "0",
        *flags,
    ]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=log, text=True, env={**os.environ, **NO_CACHE, **(env or {})}
        )
    assert process.stdout is not None
    # the READY line, or the end of its output when it exits; a server that does neither in time is
    # stuck: killed
    ready, _, _ = select.select([process.stdout], [], [], PATIENCE_S)
    line = process.stdout.readline() if ready else ""
    match = READY.search(line)
    if not match:
        if ready:
            process.wait(PATIENCE_S)
        else:
            kill(process)
        process.stdout.close()
        raise AssertionError(f"server did not start (exit {process.returncode}):\n{log_path.read_text()}")
    metrics = None if match.group(2) == "None" else int(match.group(2))
    http = None if match.group(3) == "None" else int(match.group(3))
    return RunningServer(process, int(match.group(1)), metrics, log_path, http)


def scrape(server: RunningServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=30).read()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def counted(server: RunningServer, method: str = PREDICT, protocol: str = "grpc") -> Counter[str]:
    """Calls of `method` the server has answered over `protocol`, by status code."""
    return Counter(
        {
            dict(labels)["code"]: int(value)
            for (name, labels), value in scrape(server).items()
            if name == "sentiment_requests_total"
            and dict(labels)["method"] == method
            and dict(labels)["protocol"] == protocol
        }
    )


def wait_until(what: str, condition: Callable[[], T | None], timeout_s: float = PATIENCE_S) -> T:
    """Poll `condition()` until it returns something truthy, and return that; fail naming `what`
    (and the last value) once timeout_s has passed."""
    deadline = time.monotonic() + timeout_s
    while not (last := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout_s:.0f} s waiting for {what} (last: {last!r})")
        time.sleep(0.01)
    return last


async def eventually(what: str, condition: Callable[[], T | None], timeout_s: float = PATIENCE_S) -> T:
    """wait_until for a test running an event loop: the loop keeps running while it polls."""
    deadline = time.monotonic() + timeout_s
    while not (last := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout_s:.0f} s waiting for {what} (last: {last!r})")
        await asyncio.sleep(0.01)
    return last


async def predict_all(
    target: str, requests: Iterable[pb.PredictRequest], timeout_s: float = PATIENCE_S
) -> list[pb.PredictResponse | grpc.RpcError]:
    """The requests sent all at once on one channel: each one's answer, or the error it got."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
        outcomes: list[pb.PredictResponse | grpc.RpcError] = await asyncio.gather(
            *(stub.Predict(request, timeout=timeout_s) for request in requests), return_exceptions=True
        )
    return outcomes


def codes(outcomes: Iterable[object]) -> Counter[str]:
    """How many of the outcomes were answered ("OK") or failed, by status code."""
    return Counter(o.code().name if isinstance(o, grpc.RpcError) else "OK" for o in outcomes)


class Runtime:
    """Stands between an in-process server's batcher and its model: records the real token counts of
    every batch it is given, in order; fails the first `fail` batches; and holds the first `hold`
    batches (the runtime is then busy) until `release()`."""

    def __init__(self, model: Any, hold: int = 0, fail: int = 0) -> None:
        self._real = model.run
        self._hold, self._fail = hold, fail
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._holding = threading.Semaphore(0)
        self.batches: list[list[int]] = []  # per batch, each row's real tokens
        self.seconds: list[float] = []  # per batch, how long it ran
        # a cost per padded token, slept on top of the real run: the tiny model runs any batch in
        # about a millisecond, and fairness is about batches that take as long as a real model's
        self.per_token_s = 0.0
        model.run = self._run

    def _run(self, input_ids: Any, attention_mask: Any, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            index = len(self.batches)
            self.batches.append([int(n) for n in attention_mask.sum(axis=1)])
        if index < self._hold:
            self._holding.release()
            if not self._released.wait(PATIENCE_S):
                raise RuntimeError("the test never released the runtime")
        if index < self._fail:
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : injected fault")
        began = time.monotonic()
        time.sleep(input_ids.size * self.per_token_s)
        result = self._real(input_ids, attention_mask, *args, **kwargs)
        self.seconds.append(time.monotonic() - began)
        return result

    async def held(self) -> None:
        """Returns once a held batch is running (one per call)."""
        await eventually("a batch held in the runtime", lambda: self._holding.acquire(blocking=False))

    def release(self) -> None:
        self._released.set()


@asynccontextmanager
async def in_process(
    model_root: Path, hold: int = 0, fail: int = 0, **settings: Any
) -> AsyncIterator[tuple[Any, Runtime]]:
    """A server in this event loop (no metrics endpoint: its registry is `server.metrics.registry`)
    and the Runtime standing before its model; stopped, and the runtime released, however the
    test ends."""
    from service.ops.server import Server
    from service.ops.settings import Settings

    server = Server(
        Settings(
            **{"http_port": 0, "cache_entries": 0, **settings},
            model_dir=model_root,
            host="127.0.0.1",
            port=0,
            metrics_port=-1,
            log_level="ERROR",
        )
    )
    await server.start()
    assert server.engine is not None
    runtime = Runtime(server.engine.model, hold, fail)
    try:
        yield server, runtime
    finally:
        runtime.release()
        await server.stop(5)


def sample(server: Any, name: str, **labels: str) -> float:
    """One metric sample of an in-process server (0 when it has none yet)."""
    value: float | None = server.metrics.registry.get_sample_value(name, labels)
    return value or 0.0
