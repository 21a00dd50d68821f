"""Model versions live, against real servers on loopback under load: a new version takes over with no
failed call, a bad one is refused while traffic goes on, load and unload through Triton's repository
API (tritonclient unmodified, the SDK and the CLI, with the token), memory after repeated unloads,
and shadows measuring agreement."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from model_contract import sha256_file
from sentiment_client import NotFound, Refused, SentimentClient
from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from sentiment_client.pb.sentiment.v1 import sentiment_pb2_grpc
from tests.e2e.conftest import PATIENCE_S, RunningServer, eventually, launch, scrape, wait_until

SENTIMENT = str(Path(sys.executable).with_name("sentiment"))
TOKEN = "versions-token-51c7"
CALLERS = 64


def model_copy(model_root: Path, tmp_path: Path) -> Path:
    """A model root of its own holding version 1 of the tiny model."""
    root = tmp_path / "models" / "sentiment"
    shutil.copytree(model_root / "1", root / "1")
    return root


def publish(root: Path, version: int, change: Callable[[Path], None] | None = None) -> None:
    """Version `version` as a copy of version 1, changed by `change`, made whole in a staging directory
    and renamed into place, as the exporter does."""
    staging = root / f".staging-{version}"
    shutil.copytree(root / "1", staging)
    if change is not None:
        change(staging)
    staging.rename(root / str(version))


def corrupt(directory: Path) -> None:
    """One byte of the graph changed: the sha256 in config.json no longer matches."""
    graph = directory / "model.onnx"
    data = bytearray(graph.read_bytes())
    data[len(data) // 2] ^= 0xFF
    graph.write_bytes(bytes(data))


def swap_labels(directory: Path) -> None:
    config = json.loads((directory / "config.json").read_text())
    config["labels"] = list(reversed(config["labels"]))
    (directory / "config.json").write_text(json.dumps(config))


def reverse_classifier(directory: Path) -> None:
    """A different build: the classifier's weights negated (its answers mostly flip), sha256 updated."""
    import onnx
    from onnx import numpy_helper

    graph_path = directory / "model.onnx"
    model = onnx.load(str(graph_path))
    config = json.loads((directory / "config.json").read_text())
    labels = len(config["labels"])
    weights = [t for t in model.graph.initializer if labels in t.dims and len(t.dims) == 2]
    assert weights, "no classifier weights found"
    for tensor in weights:
        tensor.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(tensor), tensor.name))
    onnx.save(model, str(graph_path))
    config["sha256"]["model.onnx"] = sha256_file(graph_path)
    (directory / "config.json").write_text(json.dumps(config))


def events(running: RunningServer) -> dict[tuple[str, str], float]:
    return {
        (dict(labels)["version"], dict(labels)["event"]): value
        for (name, labels), value in scrape(running).items()
        if name == "sentiment_model_version_events_total"
    }


def metric(running: RunningServer, name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels`."""
    return sum(
        value
        for (sample, sample_labels), value in scrape(running).items()
        if sample == name and all(dict(sample_labels).get(k) == v for k, v in labels.items())
    )


class Load:
    """CALLERS callers calling Predict in a loop until stopped; each remembers what answered it (the
    version) or how it failed (the status code)."""

    def __init__(
        self, target: str, callers: int = CALLERS, metadata: tuple[tuple[str, str], ...] = ()
    ) -> None:
        self.target = target
        self.callers = callers
        self.metadata = metadata
        self.seen: list[list[int | str]] = [[] for _ in range(callers)]
        self.stop = asyncio.Event()

    async def run(self) -> None:
        async with grpc.aio.insecure_channel(self.target) as channel:
            stub = sentiment_pb2_grpc.SentimentServiceStub(channel)

            async def caller(index: int) -> None:
                request = pb.PredictRequest(texts=[f"caller {index} found it rather good"])
                while not self.stop.is_set():
                    try:
                        answer = await stub.Predict(request, timeout=PATIENCE_S, metadata=self.metadata)
                        self.seen[index].append(answer.model_version)
                    except grpc.aio.AioRpcError as err:
                        self.seen[index].append(err.code().name)

            await asyncio.gather(*(caller(i) for i in range(self.callers)))

    def failures(self) -> list[int | str]:
        return [outcome for calls in self.seen for outcome in calls if isinstance(outcome, str)]

    def answered_by(self, version: int) -> int:
        return sum(calls.count(version) for calls in self.seen)


def test_a_new_version_takes_over_under_load_and_bad_ones_are_refused(
    model_root: Path, tmp_path: Path
) -> None:
    root = model_copy(model_root, tmp_path)
    running = launch(root, tmp_path, "--model-control", "poll", "--poll-interval-s", "0.2")
    load = Load(running.target)

    async def scenario() -> None:
        task = asyncio.create_task(load.run())
        await eventually("calls answered by version 1", lambda: load.answered_by(1) >= 200)
        publish(root, 2)
        # every caller goes over to version 2, and version 1 is drained and released
        await eventually("every caller answered by version 2", lambda: all(2 in calls for calls in load.seen))
        await eventually("version 1 unloaded", lambda: "version 1 unloaded" in running.log())
        publish(root, 3, corrupt)
        await eventually("version 3 refused", lambda: events(running).get(("3", "refused")))
        publish(root, 4, swap_labels)
        await eventually("version 4 refused", lambda: events(running).get(("4", "refused")))
        mark = load.answered_by(2)
        await eventually("calls still answered by version 2", lambda: load.answered_by(2) >= mark + 200)
        load.stop.set()
        await task

    try:
        asyncio.run(scenario())
        with SentimentClient(running.target) as client:
            info = client.model_info()
            index = {entry.version: entry for entry in client.models()}
        counted = events(running)
    finally:
        assert running.stop() == 0, running.log()
    assert load.failures() == [], f"{len(load.failures())} calls failed: {sorted(set(load.failures()))}"
    for calls in load.seen:  # each caller: version 1, then version 2, never back
        assert calls == sorted(calls) and set(calls) <= {1, 2} and calls[-1] == 2
    assert load.answered_by(1) >= 200 and load.answered_by(2) >= 400
    assert (
        info.loaded_versions == (2,) and info.default_version == 2 and info.available_versions == (1, 2, 3, 4)
    )
    # a refused version is tried once, not at every poll, until its files change
    assert counted[("2", "loaded")] == 1 and counted[("1", "unloaded")] == 1
    assert counted[("3", "refused")] == 1 and counted[("4", "refused")] == 1
    assert index[2].state == "READY" and index[2].reason == "default"
    assert index[3].state == "UNAVAILABLE" and "sha256" in index[3].reason
    assert index[4].state == "UNAVAILABLE" and "labels" in index[4].reason
    log = running.log()
    assert "version 3 refused, versions [2] still serving" in log and "corrupt or was replaced" in log
    assert "version 2 loaded" in log and "default version 1 -> 2" in log


def tritonclient(running: RunningServer, *steps: str) -> dict[str, Any]:
    """What tritonclient got for each step (tests/e2e/triton_repository.py, in its own process)."""
    script = Path(__file__).with_name("triton_repository.py")
    web = running.http.removeprefix("http://")
    result = subprocess.run(
        [sys.executable, str(script), running.target, web, TOKEN, *steps],
        capture_output=True, text=True, timeout=PATIENCE_S, check=True,
    )  # fmt: skip
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def test_every_worker_follows_the_model_directory(model_root: Path, tmp_path: Path) -> None:
    root = model_copy(model_root, tmp_path)
    running = launch(root, tmp_path, "--workers", "2", "--model-control", "poll", "--poll-interval-s", "0.2")

    def versions_answering(calls: int = 20) -> set[int]:
        """The versions that answer calls on fresh connections (the kernel spreads them over the workers)."""
        seen = set()
        for _ in range(calls):
            with grpc.insecure_channel(running.target) as channel:
                stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
                seen.add(stub.Predict(pb.PredictRequest(texts=["fine"]), timeout=PATIENCE_S).model_version)
        return seen

    try:
        assert versions_answering() == {1}
        publish(root, 2)
        wait_until("every worker answering with version 2", lambda: versions_answering() == {2})
        counted = events(running)  # the parent serves the sum over its workers
    finally:
        assert running.stop() == 0, running.log()
    assert counted[("2", "loaded")] == 2 and counted[("1", "unloaded")] == 2
    assert running.log().count("default version 1 -> 2") == 2


def test_repository_api_with_tritonclient_the_sdk_and_the_cli(model_root: Path, tmp_path: Path) -> None:
    root = model_copy(model_root, tmp_path)
    publish(root, 2)
    running = launch(root, tmp_path, "--model-control", "explicit", "--auth-token", TOKEN)
    cli_env = {**os.environ, "SENTIMENT_TARGET": running.target, "SENTIMENT_TOKEN": TOKEN}
    metadata = [("authorization", f"Bearer {TOKEN}")]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SENTIMENT, *args], capture_output=True, text=True, timeout=PATIENCE_S, check=False, env=cli_env
        )

    try:
        got = tritonclient(
            running, "index_without_token", "load_without_token", "index", "load_all", "ready_1", "ready_2",
            "metadata",
        )  # fmt: skip
        # without the token: refused, nothing changed
        assert "UNAUTHENTICATED" in got["index_without_token"]["error"]
        assert "UNAUTHENTICATED" in got["load_without_token"]["error"]
        assert [(m["version"], m["state"]) for m in got["index"]] == [("1", "UNAVAILABLE"), ("2", "READY")]
        # tritonclient's load_model with a version policy: both versions serve, the highest by default
        assert got["load_all"] is None and got["ready_1"] is True and got["ready_2"] is True
        assert got["metadata"]["versions"] == ["1", "2"]
        with SentimentClient(running.target, token=TOKEN, timeout_s=PATIENCE_S) as client:
            stub = sentiment_pb2_grpc.SentimentServiceStub(client._channel)
            request = pb.PredictRequest(texts=["asking version 1"], model_version=1)
            assert stub.Predict(request, metadata=metadata).model_version == 1
            assert stub.Predict(pb.PredictRequest(texts=["no version"]), metadata=metadata).model_version == 2
            # the SDK unloads one version; calls naming it are NOT_FOUND, listing what is loaded
            client.unload(1)
            with pytest.raises(grpc.RpcError) as gone:
                stub.Predict(request, metadata=metadata)
            assert gone.value.code() == grpc.StatusCode.NOT_FOUND
            assert "version 1 is not loaded; loaded: [2] (default 2)" in (gone.value.details() or "")
            with pytest.raises(NotFound, match=r"no version \[9\]"):
                client.load([9])
            with pytest.raises(NotFound, match="version 7 is not loaded"):
                client.unload(7)
        # the HTTP side of the same extension, with tritonclient.http
        got = tritonclient(running, "http_index", "http_load_1", "http_ready_1", "http_ready_2")
        assert [(m["version"], m["state"]) for m in got["http_index"]] == [
            ("1", "UNAVAILABLE"),
            ("2", "READY"),
        ]
        assert got["http_ready_1"] is True and got["http_ready_2"] is False
        # the CLI: list, load the latest back, unload one that is not loaded
        listed = cli("models")
        assert listed.returncode == 0 and "UNAVAILABLE" in listed.stdout, listed.stderr
        loaded = cli("load", "--latest", "1")
        assert loaded.returncode == 0 and "loaded: [2], default 2" in loaded.stderr, loaded.stderr
        refused = cli("unload", "1")
        assert refused.returncode == 2 and "version 1 is not loaded" in refused.stderr
        # the whole model unloaded: calls are UNAVAILABLE (another replica may serve); loaded again
        assert tritonclient(running, "unload")["unload"] is None
        with SentimentClient(running.target) as probe:  # health needs no token
            wait_until("health NOT_SERVING with nothing loaded", lambda: probe.health() == "NOT_SERVING")
        with pytest.raises(grpc.RpcError) as unavailable:
            stub_call = sentiment_pb2_grpc.SentimentServiceStub(grpc.insecure_channel(running.target))
            stub_call.Predict(pb.PredictRequest(texts=["anyone?"]), metadata=metadata, timeout=PATIENCE_S)
        assert unavailable.value.code() == grpc.StatusCode.UNAVAILABLE
        got = tritonclient(running, "load", "ready_2")
        assert got["load"] is None and got["ready_2"] is True
        with SentimentClient(running.target) as probe:
            wait_until("health SERVING again", lambda: probe.health() == "SERVING")
    finally:
        assert running.stop() == 0, running.log()


def test_load_and_unload_are_refused_unless_explicit(server: RunningServer) -> None:
    with SentimentClient(server.target) as client:
        with pytest.raises(Refused, match="--model-control explicit"):
            client.load()
        with pytest.raises(Refused, match="--model-control explicit"):
            client.unload(1)
        (entry,) = client.models()
        assert (entry.version, entry.state, entry.reason) == (1, "READY", "default")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_repeated_load_and_unload_under_load_loses_no_call_and_no_memory(
    model_root: Path, tmp_path: Path
) -> None:
    root = model_copy(model_root, tmp_path)
    publish(root, 2)
    running = launch(root, tmp_path, "--model-control", "explicit", "--versions", "1")
    load = Load(running.target, callers=8)
    sizes: list[int] = []

    async def cycles() -> None:
        from sentiment_client import AsyncSentimentClient

        task = asyncio.create_task(load.run())
        async with AsyncSentimentClient(running.target, timeout_s=PATIENCE_S) as client:
            await eventually("calls answered", lambda: load.answered_by(1) >= 100)
            for cycle in range(21):
                await client.load([1, 2])
                await eventually("version 2 answering", lambda: load.answered_by(2) > 0)
                await client.unload(2)
                if cycle == 0:  # the first cycle warms allocators and caches up: the baseline follows it
                    sizes.append(rss_bytes(running.process.pid))
            sizes.append(rss_bytes(running.process.pid))
        load.stop.set()
        await task

    try:
        asyncio.run(cycles())
        counted = events(running)
    finally:
        assert running.stop() == 0, running.log()
    assert load.failures() == [], sorted(set(load.failures()))
    assert counted[("2", "loaded")] == 21 and counted[("2", "unloaded")] == 21
    baseline, after = sizes
    assert after <= baseline * 1.10, f"RSS grew from {baseline >> 20} MiB to {after >> 20} MiB over 20 cycles"


def test_a_shadow_measures_agreement_off_the_callers_path(model_root: Path, tmp_path: Path) -> None:
    root = model_copy(model_root, tmp_path)
    publish(root, 2)  # the same weights as version 1
    publish(root, 3, reverse_classifier)  # a different build
    running = launch(root, tmp_path, "--model-control", "explicit", "--versions", "1", "--shadow-share", "1")
    texts = [f"review {i}: {word}" for i, word in enumerate(["wonderful", "awful", "fine", "dull"] * 10)]
    try:
        with SentimentClient(running.target, timeout_s=PATIENCE_S) as client:
            client.load([2, 3], shadow=True)
            info = client.model_info()
            assert (
                info.loaded_versions == (1,) and info.shadow_versions == (2, 3) and info.default_version == 1
            )
            answers = [client.predict(text) for text in texts]
            assert all(a.label for a in answers)
            wait_until(
                "every sampled call compared on both shadows",
                lambda: all(
                    metric(running, "sentiment_shadow_texts_total", version=v, agreement="agree")
                    + metric(running, "sentiment_shadow_texts_total", version=v, agreement="disagree")
                    + metric(running, "sentiment_shadow_skipped_calls_total", version=v)
                    >= len(texts)
                    for v in ("2", "3")
                ),
            )
            # a shadow answers no call, and its answers are not counted as traffic
            with pytest.raises(NotFound):
                client._call(client._stub.Predict, pb.PredictRequest(texts=["x"], model_version=2))
            assert metric(running, "sentiment_predictions_total", version="2") == 0
            # promoted: loaded again, not as a shadow; it is the highest serving, so the default
            client.load([1, 2])
            promoted = client.model_info()
            assert promoted.default_version == 2 and promoted.shadow_versions == (3,)
        same = {
            a: metric(running, "sentiment_shadow_texts_total", version="2", agreement=a)
            for a in ("agree", "disagree")
        }
        other = {
            a: metric(running, "sentiment_shadow_texts_total", version="3", agreement=a)
            for a in ("agree", "disagree")
        }
    finally:
        assert running.stop() == 0, running.log()
    assert same["agree"] >= len(texts) // 2 and same["disagree"] == 0  # identical weights: always agree
    compared = other["agree"] + other["disagree"]
    assert compared >= len(texts) // 2
    assert other["agree"] / compared < 0.9, f"a reversed classifier agreed on {other['agree']} of {compared}"
