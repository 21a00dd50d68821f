"""Start-up refuses what cannot work, on one line, and a group of workers dies with its parent."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from sentiment_client.pb.sentiment.v1 import sentiment_pb2_grpc
from service.core.errors import StartupError
from service.ops.memory import memory_limit_bytes
from service.ops.settings import Settings
from service.ops.sockets import check_port_free
from service.ops.workers import check_capacity
from tests.e2e.conftest import PATIENCE_S, descendants, kill, launch, wait_until


def start(
    model_root: Path, *flags: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m service` that is expected to refuse to start: its exit and its output."""
    args = [sys.executable, "-m", "service", "--model-dir", str(model_root), "--host", "127.0.0.1"]
    args += ["--metrics-port", "-1", *flags]
    return subprocess.run(
        args, capture_output=True, text=True, timeout=PATIENCE_S, env={**os.environ, **(env or {})}
    )


def refusal(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a refused start printed about why (start-up INFO lines aside)."""
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if "cannot start" in line]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def listener() -> Iterator[int]:
    """A port something else listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize(
    ("flags", "env", "names"),
    [
        ((), {"SENTIMENT_AUTH_TOKEN": ""}, "--auth-token"),
        (("--auth-token", "   "), {}, "--auth-token"),
        (("--port", "abc"), {}, "--port (SENTIMENT_PORT)"),
        ((), {"SENTIMENT_MAX_BATCH_SIZE": "0"}, "--max-batch-size (SENTIMENT_MAX_BATCH_SIZE)"),
        (("--no-such-setting", "1"), {}, "unrecognized arguments: --no-such-setting"),
        (("--drain-delay-s", "30", "--grace-period-s", "10"), {}, "--drain-delay-s (30) is longer"),
        (("--port", "9100", "--metrics-port", "9100"), {}, "--port and --metrics-port are both 9100"),
        (("--workers", "65"), {}, "--workers (SENTIMENT_WORKERS)"),
        (("--workers", "cpus+1"), {}, "at most"),
    ],
)
def test_bad_settings_are_refused_on_one_line(model_root: Path, flags, env, names) -> None:
    if flags == ("--workers", "cpus+1"):
        flags = ("--workers", str(len(os.sched_getaffinity(0)) + 1))
    line = refusal(start(model_root, *flags, env=env))
    assert names in line


def test_a_port_in_use_is_named_on_one_line(model_root: Path, listener: int) -> None:
    for workers in ("1", "2"):
        line = refusal(start(model_root, "--port", str(listener), "--workers", workers))
        assert f"--port {listener}: Address already in use" in line


def test_a_broken_model_directory_is_named_on_one_line(model_root: Path, tmp_path: Path) -> None:
    broken = tmp_path / "sentiment"
    shutil.copytree(model_root, broken)
    tokenizer = broken / "1" / "tokenizer.json"
    tokenizer.write_bytes(tokenizer.read_bytes()[:1000])  # truncated
    line = refusal(start(broken, "--port", "0"))
    assert f"{tokenizer} could not be read by the tokenizer" in line
    assert "holds no model versions" in refusal(start(tmp_path / "empty", "--port", "0"))


def test_workers_beyond_the_memory_limit_are_refused_saying_how_many_fit() -> None:
    settings = Settings(workers=4)
    with pytest.raises(StartupError, match=r"--workers 4: each worker needs about 460 MiB .* at most 2"):
        check_capacity(settings, cpus=8, memory_bytes=1024 * 2**20, model_bytes=100 * 2**20)
    with pytest.raises(
        StartupError, match="may use 2 CPUs, and each worker needs one .*; at most 2 workers fit"
    ):
        check_capacity(settings, cpus=2, memory_bytes=None, model_bytes=100 * 2**20)
    check_capacity(settings, cpus=8, memory_bytes=4096 * 2**20, model_bytes=100 * 2**20)


def test_the_memory_limit_is_the_cgroups_or_what_the_machine_has(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 8000000 kB\nMemAvailable: 4000000 kB\n")
    v2, v1 = tmp_path / "memory.max", tmp_path / "limit_in_bytes"
    assert memory_limit_bytes(v2, v1, meminfo) == 4000000 * 1024  # no cgroup limit
    v2.write_text("max\n")
    assert memory_limit_bytes(v2, v1, meminfo) == 4000000 * 1024
    v2.write_text(f"{2**30}\n")
    assert memory_limit_bytes(v2, v1, meminfo) == 2**30
    v2.unlink()
    v1.write_text(f"{2**62}\n")  # cgroup v1 says "unlimited" with a huge number
    assert memory_limit_bytes(v2, v1, meminfo) == 4000000 * 1024


def test_workers_die_with_their_parent_however_it_dies(model_root: Path, tmp_path: Path) -> None:
    running = launch(model_root, tmp_path, "--workers", "2")
    workers = descendants(running.process.pid)
    assert len(workers) == 2
    outcomes: list[str] = []
    stop = threading.Event()

    def load() -> None:
        """A caller that keeps calling until the port is gone: each call is answered or refused."""
        with grpc.insecure_channel(running.target) as channel:
            stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
            while not stop.is_set():
                try:
                    stub.Predict(pb.PredictRequest(texts=["a fine film"]), timeout=PATIENCE_S)
                    outcomes.append("OK")
                except grpc.RpcError as err:
                    outcomes.append(err.code().name)
                    if err.code() is grpc.StatusCode.UNAVAILABLE and not alive(workers):
                        return

    caller = threading.Thread(target=load)
    caller.start()
    try:
        wait_until("calls answered", lambda: outcomes.count("OK") >= 5)
        os.kill(running.process.pid, signal.SIGKILL)  # no chance to stop its workers itself
        running.process.wait(PATIENCE_S)
        wait_until("every worker gone", lambda: not alive(workers))
        caller.join(PATIENCE_S)
        assert not caller.is_alive()  # nothing hangs
        # every call was answered, or refused with a status the SDK retries elsewhere: UNAVAILABLE, or
        # CANCELLED for a call that reached a worker as it closed its listener; none failed otherwise
        assert set(outcomes) <= {"OK", "UNAVAILABLE", "CANCELLED"}, outcomes
        check_port_free("127.0.0.1", running.port)  # as a restarted group checks: nothing listens

    finally:
        stop.set()
        for pid in workers:
            if alive([pid]):
                os.kill(pid, signal.SIGKILL)
        kill(running.process)
        if running.process.stdout is not None:
            running.process.stdout.close()


def alive(pids: list[int]) -> bool:
    """Whether any of the processes still runs (a zombie does not: it holds no socket)."""
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "Z":
            return True
    return False
