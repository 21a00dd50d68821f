"""Real servers in their own processes on 127.0.0.1, free ports, stopped by their PID."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sentiment_client.pb.sentiment.v1 import sentiment_pb2_grpc

READY = re.compile(r"READY port=(\d+) metrics_port=(\d+|None)")


@dataclass
class RunningServer:
    process: subprocess.Popen[str]
    port: int
    metrics_port: int | None
    log_path: Path

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return code


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
        *flags,
    ]
    with log_path.open("w") as log:
        process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=log, text=True, env={**os.environ, **(env or {})}
        )
    assert process.stdout is not None
    line = process.stdout.readline()  # blocks until READY or exit
    match = READY.search(line)
    if not match:
        process.wait(30)
        process.stdout.close()
        raise AssertionError(f"server did not start (exit {process.returncode}):\n{log_path.read_text()}")
    metrics = None if match.group(2) == "None" else int(match.group(2))
    return RunningServer(process, int(match.group(1)), metrics, log_path)


def scrape(server: RunningServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


@pytest.fixture(scope="session")
def server(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One shared server over the tiny model; max_queue_delay generous so batches form."""
    running = launch(model_root, tmp_path_factory.mktemp("server"), "--max-queue-delay-ms", "5")
    yield running
    assert running.stop() == 0, running.log()


@pytest.fixture
def stub(server: RunningServer) -> Iterator[sentiment_pb2_grpc.SentimentServiceStub]:
    with grpc.insecure_channel(server.target) as channel:
        yield sentiment_pb2_grpc.SentimentServiceStub(channel)
