"""Model versions under attack: directory names that are not version numbers, configs that lie about
the graph, a graph too large to read, a copy still under way, browsers of other sites and of
rebound names, and refusals that would tell a caller where the files live."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import PATIENCE_S, RunningServer, launch, wait_until
from tests.e2e.test_versions import events, model_copy, publish, swap_labels


def call(server: RunningServer, path: str, body: bytes | None = None, **headers: str) -> tuple[int, dict]:
    if body is not None:
        headers.setdefault("Content-Type", "application/json")
    request = urllib.request.Request(server.http + path, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=PATIENCE_S) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def lie(field: str, value: int):
    def change(directory: Path) -> None:
        config = json.loads((directory / "config.json").read_text())
        config["model"][field] = value
        (directory / "config.json").write_text(json.dumps(config))

    return change


@pytest.fixture
def explicit(model_root: Path, tmp_path: Path) -> Iterator[tuple[Path, RunningServer]]:
    """A model root of its own (version 1) and a server over it that loads and unloads on request."""
    root = model_copy(model_root, tmp_path)
    running = launch(root, tmp_path, "--model-control", "explicit")
    try:
        yield root, running
    finally:
        running.stop()


def test_names_that_are_not_version_numbers_are_not_versions(model_root: Path, tmp_path: Path) -> None:
    root = model_copy(model_root, tmp_path)
    for name in ("99999999999999999999", "0001", "00"):  # past int64, leading zeros
        shutil.copytree(root / "1", root / name)
    running = launch(root, tmp_path, "--model-control", "poll")
    try:
        status, info = call(running, "/v1/model")
        assert status == 200 and info["availableVersions"] == ["1"] and info["defaultVersion"] == "1", info
        fine = b'{"texts": ["fine"]}'
        status, answer = call(running, "/v1/predict", fine, **{"Content-Type": "application/json"})
        assert status == 200 and answer["modelVersion"] == "1", answer
        assert call(running, "/v1/model?model_version=0001")[0] == 400
    finally:
        running.stop()


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (lie("n_layers", 12), "layers"),
        (lie("n_heads", 1), "heads"),
        (lie("vocab_size", 10), "vocabulary"),
    ],
    ids=["layers", "heads", "vocabulary"],
)
def test_a_config_that_lies_about_its_graph_is_refused(explicit, tmp_path: Path, change, said) -> None:
    root, running = explicit
    publish(root, 2, change)
    status, answer = call(running, "/v2/repository/models/sentiment/load", b"{}")
    assert status == 409 and said in answer["error"], answer
    assert str(root) not in answer["error"] and str(tmp_path) not in answer["error"], answer
    assert call(running, "/v1/model")[1]["defaultVersion"] == "1"


def test_a_graph_over_2_gib_is_refused_before_it_is_read(explicit) -> None:
    root, running = explicit
    publish(root, 2)
    with (root / "2" / "model.onnx").open("r+b") as graph:
        graph.truncate(8 << 30)  # sparse: 8 GiB that take no room
    status, answer = call(running, "/v2/repository/models/sentiment/load", b"{}")
    assert status == 409 and "2 GiB" in answer["error"], answer


def test_a_copy_under_way_is_waited_for_not_refused(model_root: Path, tmp_path: Path) -> None:
    root = model_copy(model_root, tmp_path)
    running = launch(root, tmp_path, "--model-control", "poll", "--poll-interval-s", "1")
    try:
        partial = root / "2"
        partial.mkdir()
        shutil.copy(root / "1" / "config.json", partial)  # as `cp -r` leaves it half way
        shutil.copy(root / "1" / "tokenizer.json", partial)
        with (root / "1" / "model.onnx").open("rb") as source, (partial / "model.onnx").open("wb") as target:
            data = source.read()
            piece = len(data) // 12 + 1
            for start in range(0, len(data), piece):  # the copy's own pace: it spans several polls
                target.write(data[start : start + piece])
                target.flush()
                time.sleep(0.25)
        wait_until("version 2 to serve", lambda: call(running, "/v1/model")[1]["defaultVersion"] == "2")
        assert ("2", "refused") not in events(running)
    finally:
        running.stop()


def test_browsers_of_other_sites_cannot_change_the_models(explicit) -> None:
    root, running = explicit
    port = running.http_port
    unload = "/v2/repository/models/sentiment/unload"
    status, _ = call(running, unload, b"{}", Origin="http://evil.example", **{"Content-Type": "text/plain"})
    assert status == 403
    rebound = {"Origin": f"http://evil.example:{port}", "Host": f"evil.example:{port}"}
    status, answer = call(running, unload, b"{}", **rebound)  # DNS rebinding: same origin, strange name
    assert status == 403 and "--http-allowed-hosts" in answer["error"], answer
    assert call(running, "/v1/model")[1]["loadedVersions"] == ["1"]
    other = json.dumps({"parameters": {"config": json.dumps({"name": "other"})}}).encode()
    status, answer = call(running, "/v2/repository/models/sentiment/load", other)
    assert status == 400 and "other" in answer["error"], answer
    status, _ = call(running, unload, b'{"parameters": {"version": "0001"}}')
    assert status == 400
    assert call(running, "/v1/model")[1]["loadedVersions"] == ["1"]


def test_the_api_document_needs_the_token(model_root: Path, tmp_path: Path) -> None:
    running = launch(model_root, tmp_path, "--auth-token", "door-token-31")
    try:
        assert call(running, "/openapi.json")[0] == 401
        assert call(running, "/openapi.json", Authorization="Bearer door-token-31")[0] == 200
        assert call(running, "/v2/health/live")[0] == 200
    finally:
        running.stop()


def test_a_sampler_the_sdk_does_not_know_stops_the_start(model_root: Path, tmp_path: Path) -> None:
    env = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
        "OTEL_TRACES_SAMPLER": "garbage",
    }
    flags = ["--model-dir", str(model_root), "--port", "0", "--http-port", "0", "--metrics-port", "-1"]
    result = subprocess.run(
        [sys.executable, "-m", "service", *flags],
        capture_output=True,
        text=True,
        timeout=PATIENCE_S,
        env={**os.environ, **env},
    )
    assert result.returncode != 0
    assert "OTEL_TRACES_SAMPLER" in result.stderr and "garbage" in result.stderr, result.stderr[-2000:]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.long
def test_refused_loads_give_their_memory_back(explicit) -> None:
    root, running = explicit
    publish(root, 2, swap_labels)  # refused once its sessions are built
    load = "/v2/repository/models/sentiment/load"
    assert call(running, load, b"{}")[0] == 409  # the first one's allocations stay: the baseline
    before = rss_mib(running.process.pid)
    for _ in range(15):
        assert call(running, load, b"{}")[0] == 409
    grown = rss_mib(running.process.pid) - before
    print(f"RSS after 15 more refused loads: {grown:+.1f} MiB")
    assert grown < 30
