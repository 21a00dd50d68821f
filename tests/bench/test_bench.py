"""The bench's own parts against real servers: the load generator's two loops, the peer serving the
same model as this server, and `python -m bench report` end to end (briefly)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import numpy as np
import pytest

from bench import peer
from sentiment_client.pb.inference import grpc_predict_v2_pb2 as v2
from sentiment_client.pb.inference import grpc_predict_v2_pb2_grpc

if TYPE_CHECKING:
    from tests.e2e.conftest import RunningServer

ROOT = Path(__file__).resolve().parent.parent.parent
TEXTS = ["a warm and funny film", "dull, long and pointless", "not bad at all", "😀 loved it", "meh"]


@pytest.fixture(scope="module")
def texts_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("texts") / "texts.json"
    path.write_text(json.dumps(TEXTS * 20))
    return path


def loadgen(*args: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", *args], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def infer(target: str) -> v2.ModelInferResponse:
    tensor = v2.ModelInferRequest.InferInputTensor(name="text", datatype="BYTES", shape=[len(TEXTS)])
    tensor.contents.bytes_contents.extend(t.encode() for t in TEXTS)
    with grpc.insecure_channel(target) as channel:
        stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
        return stub.ModelInfer(v2.ModelInferRequest(model_name="sentiment", inputs=[tensor]), timeout=60)


def outputs(response: v2.ModelInferResponse) -> tuple[list[bytes], np.ndarray]:
    by_name = {o.name: o for o in response.outputs}
    labels = list(by_name["label"].contents.bytes_contents)
    if not labels:  # raw contents, in the order of the outputs
        raw = dict(zip([o.name for o in response.outputs], response.raw_output_contents, strict=True))
        body, labels = raw["label"], []
        while body:
            size = int.from_bytes(body[:4], "little")
            labels.append(body[4 : 4 + size])
            body = body[4 + size :]
        probabilities = np.frombuffer(raw["probabilities"], dtype="<f4")
    else:
        probabilities = np.array(by_name["probabilities"].contents.fp32_contents, dtype=np.float32)
    return labels, probabilities.reshape(len(TEXTS), -1)


def test_open_loop_offers_the_rate_asked_from_several_processes(
    server: RunningServer, texts_file: Path
) -> None:
    result = loadgen(
        "--target", server.target, "--protocol", "v2", "--sentences", str(texts_file),
        "--rate", "80", "--duration", "2", "--processes", "2",
    )  # fmt: skip
    assert result["errors"] == {} and result["offered_per_s"] == 80
    assert 80 <= result["requests"] <= 240  # Poisson: about 160 arrivals in 2 s
    assert result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]
    assert result["client_cpu_cores"] > 0


def test_closed_loop_mixes_long_texts_over_sentiment_v1(
    server: RunningServer, texts_file: Path, tmp_path
) -> None:
    long = tmp_path / "long.json"
    long.write_text(json.dumps([" ".join(TEXTS * 30)]))
    result = loadgen(
        "--target", server.target, "--sentences", str(texts_file), "--long", str(long),
        "--long-fraction", "0.5", "--concurrency", "4", "--texts-per-request", "4", "--duration", "1",
    )  # fmt: skip
    assert result["errors"] == {} and result["requests"] > 4
    assert result["sentences_per_s"] == pytest.approx(4 * result["requests"] / 1, rel=0.5)


@pytest.mark.long  # builds the peer's environment (MLServer) the first time: minutes
def test_the_peer_serves_the_same_model_with_the_same_answers(
    server: RunningServer, model_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    python = peer.ensure_venv(cache_dir)
    process, port = peer.start(python, tmp_path / "mlserver", model_dir)
    try:
        theirs = infer(f"127.0.0.1:{port}")
    finally:
        peer.stop(process)
    our_labels, our_probabilities = outputs(infer(server.target))
    their_labels, their_probabilities = outputs(theirs)
    assert our_labels == their_labels
    np.testing.assert_allclose(our_probabilities, their_probabilities, atol=1e-5)


def test_half_open_bench_sees_the_server_close_every_held_connection(model_root: Path) -> None:
    result = subprocess.run(
        [
            sys.executable, "-m", "bench.half_open", "--model-dir", str(model_root), "--connections", "50",
            "--duration", "1.5", "--server-flags", "--handshake-timeout-s 1",
        ],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stderr.strip().splitlines()[-1])
    assert figures["half_open"]["closed_by_server"] == 50
    assert figures["alone"]["calls"] > 0 and figures["with_half_open"]["calls"] > 0


@pytest.mark.long  # every load phase for two systems, and the peer's environment: minutes
def test_report_writes_results_and_plots(model_root: Path, cache_dir: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable, "-m", "bench", "report", "--model-dir", str(model_root), "--duration", "0.5",
            "--sentences", "100", "--cache-dir", str(cache_dir), "--out", str(tmp_path),
            "--systems", "ours_fp32,ours_fp32_http,naive,mlserver_batching,mlserver_batching_http",
            "--goodput-steps", "1",
        ],
        capture_output=True, text=True, cwd=ROOT, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    text = (tmp_path / "RESULTS.md").read_text()
    for row in (
        "goodput at p99 <= 100 ms, gRPC: this server / MLServer's best",
        "goodput at p99 <= 50 ms, HTTP: this server / MLServer's",
        "goodput at p99 <= 100 ms: this server / the naive server",
        "1 caller: HTTP p50 / gRPC p50",
        "1 caller: gRPC p50 / the naive server's p50",
        "64 callers: throughput / ONNX Runtime alone on length-sorted batches of 32",
        "64 callers: p99 / that MLServer's p99",
        "HTTP throughput / gRPC throughput",
    ):
        assert row in text
    report = json.loads((tmp_path / "results.json").read_text())
    assert set(report["systems"]) == {
        "ours_fp32",
        "ours_fp32_http",
        "naive",
        "mlserver_batching",
        "mlserver_batching_http",
    }
    # every system started at once, every load point run against each in turn: the order rotates
    starts = [
        line.split()[0]
        for line in result.stdout.splitlines()
        if " 1 callers " in line or " 4 callers " in line
    ]
    assert starts[0] != starts[5] and sorted(starts[:5]) == sorted(report["systems"])
    for figures in report["systems"].values():
        assert all(figures["closed"][c]["requests"] > 0 for c in ("1", "64"))
        assert figures["open"]["0.75"]["offered_per_s"] > 0
        for target in ("100", "50"):
            good = figures["goodput"][target]
            assert good["rate_per_s"] >= 0 and good["target_p99_ms"] == int(target)
    assert report["systems"]["ours_fp32"]["closed"]["64"]["mean_batch_size"] >= 1
    assert report["ort_sorted32"]["sentences_per_s"] > 0
    for plot in ("throughput.png", "latency.png"):
        assert (tmp_path / "figures" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_page_bench_times_the_playground_in_chromium(model_root: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.page", "--model-dir", str(model_root), "--runs", "3"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    timing = figures["submit_to_coloured_words_ms"]
    assert figures["runs"] == 3 and 0 < timing["p50"] <= timing["max"]


@pytest.mark.long  # a capacity run and eight load points
def test_queue_signal_bench_writes_its_points_and_plot(
    model_root: Path, cache_dir: Path, tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.queue_signal", "--model-dir", str(model_root), "--duration", "1",
         "--sentences", "100", "--cache-dir", str(cache_dir), "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "queue_signal.json").read_text())
    assert len(report["points"]) == 8 and report["capacity_per_s"] > 0
    assert all(p["served_per_s"] > 0 and p["queue_wait_mean_s"] >= 0 for p in report["points"])
    assert (tmp_path / "figures" / "queue_signal.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.long  # three servers, two loads each
def test_tracing_bench_measures_off_and_on_and_receives_spans(
    model_root: Path, cache_dir: Path, tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.tracing", "--model-dir", str(model_root), "--duration", "1",
         "--rounds", "1", "--sentences", "100", "--cache-dir", str(cache_dir), "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads((tmp_path / "tracing.json").read_text())
    assert figures["configurations"] == ["off", "on, 10% sampled", "on, every call"]
    assert figures["errors"] == 0 and figures["spans_received"] > 0
    assert all(point["sentences_per_s"] > 0 for by in figures["median"].values() for point in by.values())
    assert "| off | 64 |" in (tmp_path / "TRACING.md").read_text()


@pytest.mark.long  # a switch under load, then a shadow on and off
def test_versions_bench_switches_with_no_failed_call_and_compares_a_shadow(
    model_root: Path, cache_dir: Path, tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.versions", "--model-dir", str(model_root), "--steady-s", "2",
         "--rounds", "1", "--callers", "16", "--sentences", "100", "--cache-dir", str(cache_dir),
         "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads((tmp_path / "versions.json").read_text())
    switch = figures["switch"]
    assert switch["errors"] == 0 and switch["every_answer_from_v1_or_v2"]
    assert switch["answered_by"]["1"] > 0 and switch["answered_by"]["2"] > 0
    assert switch["steady"]["calls"] > 0 and switch["during_switch"]["calls"] > 0
    shadow = figures["shadow"]["rounds"]["half capacity"]["with"][0]["shadow"]
    assert shadow.get("agree", 0) > 0 and shadow.get("disagree", 0) == 0  # a copy always agrees
