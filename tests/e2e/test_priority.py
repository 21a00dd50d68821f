"""A request's priority, as each API says it, reaches the queue: counted in the queue-wait histogram
under the priority the server read (sentiment.v1's field over gRPC and HTTP, Triton's parameter over
gRPC and HTTP, RFC 9218's Priority header on any HTTP route, vLLM's priority field), and a value
no API defines is refused."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import grpc
import pytest

from sentiment_client.pb.inference import grpc_predict_v2_pb2 as v2
from sentiment_client.pb.inference import grpc_predict_v2_pb2_grpc as v2_grpc
from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from sentiment_client.pb.sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from tests.e2e.conftest import PATIENCE_S, RunningServer, scrape

TEXTS = ["A wonderful film.", "Dull and far too long.", "fine"]


def waited(server: RunningServer) -> dict[str, float]:
    """Texts counted in the queue-wait histogram, by priority."""
    samples = scrape(server)
    return {
        name: samples.get(("sentiment_queue_wait_seconds_count", (("priority", name),)), 0.0)
        for name in ("high", "normal", "low")
    }


def moved(server: RunningServer, send: Any) -> dict[str, float]:
    """What send() added to each priority's count."""
    before = waited(server)
    send()
    after = waited(server)
    return {name: after[name] - before[name] for name in after if after[name] != before[name]}


def http(server: RunningServer, path: str, body: dict[str, Any], **headers: str) -> int:
    request = urllib.request.Request(
        server.http + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=PATIENCE_S) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def infer_request(level: int | None) -> v2.ModelInferRequest:
    message = v2.ModelInferRequest(model_name="sentiment")
    message.inputs.add(name="text", datatype="BYTES", shape=[len(TEXTS)]).contents.bytes_contents.extend(
        t.encode() for t in TEXTS
    )
    if level is not None:
        message.parameters["priority"].int64_param = level
    return message


def test_each_api_carries_the_priority_to_the_queue(server: RunningServer) -> None:
    n = float(len(TEXTS))
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.SentimentServiceStub(channel)
        inference = v2_grpc.GRPCInferenceServiceStub(channel)
        assert moved(server, lambda: stub.Predict(pb.PredictRequest(texts=TEXTS))) == {"normal": n}
        low = pb.PredictRequest(texts=TEXTS, priority=pb.PRIORITY_LOW)
        assert moved(server, lambda: stub.Predict(low)) == {"low": n}
        assert moved(server, lambda: inference.ModelInfer(infer_request(1))) == {"high": n}
        assert moved(server, lambda: inference.ModelInfer(infer_request(5))) == {"low": n}
        with pytest.raises(grpc.RpcError) as refused:
            stub.Predict(pb.PredictRequest(texts=TEXTS, priority=9))  # type: ignore[arg-type]
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "priority 9 is unknown" in str(refused.value.details())
    body = {"texts": TEXTS}
    assert moved(server, lambda: http(server, "/v1/predict", body, Priority="u=0")) == {"high": n}
    assert moved(server, lambda: http(server, "/v1/predict", body, Priority="u=6, i")) == {"low": n}
    assert moved(server, lambda: http(server, "/v1/predict", body, Priority="nonsense")) == {"normal": n}
    # the body's own field wins over the header
    high_body = {"texts": TEXTS, "priority": "PRIORITY_HIGH"}
    assert moved(server, lambda: http(server, "/v1/predict", high_body, Priority="u=7")) == {"high": n}
    tensors = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(TEXTS)], "data": TEXTS}]}
    infer = "/v2/models/sentiment/infer"
    assert moved(server, lambda: http(server, infer, tensors, Priority="u=7")) == {"low": n}
    assert moved(server, lambda: http(server, "/v1/classify", {"input": TEXTS, "priority": -1})) == {
        "high": n
    }
    assert moved(server, lambda: http(server, "/predict", {"inputs": TEXTS[0]}, Priority="u=5")) == {
        "low": 1.0
    }
    assert http(server, "/v1/classify", {"input": TEXTS, "priority": "soon"}) == 400
