"""Logs that join up: JSON lines, and a sampled access line per call over either protocol, which never
holds the token, nor the texts unless asked."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import grpc

from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from sentiment_client.pb.sentiment.v1 import sentiment_pb2_grpc
from tests.e2e.conftest import PATIENCE_S, RunningServer, launch

TOKEN = "access-log-token-9d2e"
TEXTS = ["A private opinion about the film, wonderful.", "Another private one, dreadful."]
PREDICT = "sentiment.v1.SentimentService/Predict"


def calls(running: RunningServer, token: str | None = None) -> None:
    """Two texts over gRPC, one refused call, one text over HTTP."""
    metadata = [("authorization", f"Bearer {token}")] if token else []
    with grpc.insecure_channel(running.target) as channel:
        stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
        assert stub.Predict(pb.PredictRequest(texts=TEXTS), timeout=PATIENCE_S, metadata=metadata).predictions
        try:
            stub.Predict(pb.PredictRequest(texts=[]), timeout=PATIENCE_S, metadata=metadata)
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(
        f"{running.http}/v1/predict", json.dumps({"texts": TEXTS[:1]}).encode(), headers
    )
    assert json.loads(urllib.request.urlopen(request, timeout=PATIENCE_S).read())["predictions"]


def test_json_logs_with_an_access_line_per_call_and_no_secrets(model_root: Path, tmp_path: Path) -> None:
    running = launch(
        model_root, tmp_path, "--log-format", "json", "--access-log-sample", "1", "--auth-token", TOKEN
    )
    try:
        calls(running, TOKEN)
    finally:
        assert running.stop() == 0, running.log()
    log = running.log()
    records = [json.loads(line) for line in log.splitlines() if line.strip()]  # every line is JSON
    assert {"asctime", "levelname", "name", "message"} <= set(records[0])
    access = [r for r in records if r["name"] == "service.access"]
    by = {(r["protocol"], r["code"]): r for r in access if r["method"] == PREDICT}
    grpc_ok, refused, http_ok = by[("grpc", "OK")], by[("grpc", "INVALID_ARGUMENT")], by[("http", "OK")]
    assert grpc_ok["texts"] == 2 and grpc_ok["tokens"] >= 2 * 4 and grpc_ok["version"] == 1
    assert grpc_ok["compute_ms"] > 0 and grpc_ok["queue_ms"] >= 0 and grpc_ok["ms"] >= grpc_ok["compute_ms"]
    assert grpc_ok["peer"].startswith(("ipv4:127.0.0.1:", "ipv6:"))
    assert refused["texts"] == 0 and refused["version"] is None
    assert http_ok["texts"] == 1 and http_ok["peer"].startswith("ipv4:127.0.0.1:")
    # what callers wrote, and the token, are nowhere in the log
    assert TOKEN not in log and not any(text in log for text in TEXTS)
    assert "private" not in log


def test_texts_are_logged_only_when_asked(model_root: Path, tmp_path: Path, server: RunningServer) -> None:
    running = launch(
        model_root, tmp_path, "--access-log-sample", "1", "--access-log-texts", "--log-format", "json"
    )
    try:
        calls(running)
    finally:
        assert running.stop() == 0, running.log()
    access = [json.loads(line) for line in running.log().splitlines() if "service.access" in line]
    said = [r["said"] for r in access if r["code"] == "OK" and r["protocol"] == "grpc"]
    assert said == [TEXTS]
    # off by default: the shared server logs no access lines
    assert "service.access" not in server.log()
