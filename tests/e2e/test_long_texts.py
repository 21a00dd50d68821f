"""Long texts on a real server: cut by default, read whole in windows when a request (sentiment.v1's
long_texts, KServe's long_texts parameter, text-embeddings-inference's truncate) or the server
(--long-texts windows) says so; the same answer through every door."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests

from sentiment_client.pb.inference import grpc_predict_v2_pb2 as v2
from sentiment_client.pb.inference import grpc_predict_v2_pb2_grpc as v2_grpc
from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from sentiment_client.pb.sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from tests.e2e.conftest import PATIENCE_S, RunningServer, launch

LONG = " ".join(f"scene {n} dragged on and on, yet the cast was wonderful" for n in range(40))
SHORT = "a lovely film"


@pytest.fixture(scope="module")
def whole_by_default(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = launch(model_root, tmp_path_factory.mktemp("windows"), "--long-texts", "windows")
    try:
        yield running
    finally:
        assert running.stop() == 0, running.log()


def predict(server: RunningServer, **fields: object) -> list[pb.Prediction]:
    with grpc.insecure_channel(server.target) as channel:
        response = pb_grpc.SentimentServiceStub(channel).Predict(
            pb.PredictRequest(texts=[LONG, SHORT], **fields)
        )
    return list(response.predictions)


def test_a_request_chooses_cut_or_whole(server: RunningServer) -> None:
    cut, short_cut = predict(server)
    assert cut.truncated and cut.windows == 1 and short_cut.windows == 1
    whole, short_whole = predict(server, long_texts=pb.LONG_TEXTS_WINDOWS)
    assert not whole.truncated and whole.windows > 2 and whole.num_tokens > cut.num_tokens
    assert list(whole.probabilities) != list(cut.probabilities)
    assert short_whole.windows == 1 and short_whole.probabilities == pytest.approx(short_cut.probabilities)
    assert predict(server, long_texts=pb.LONG_TEXTS_TRUNCATE)[0].truncated
    seen = predict(server, long_texts=pb.LONG_TEXTS_WINDOWS, attention=pb.ATTENTION_MODE_SUMMARY)[0]
    assert len(seen.attention.tokens) == whole.num_tokens == len(seen.attention.rollout)
    with pytest.raises(grpc.RpcError) as refused:
        predict(server, long_texts=pb.LONG_TEXTS_WINDOWS, attention=pb.ATTENTION_MODE_FULL)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "full attention is not given" in str(refused.value.details())
    # the same answer over HTTP, over KServe v2 and over text-embeddings-inference's /predict
    body = {"texts": [LONG], "longTexts": "LONG_TEXTS_WINDOWS"}
    over_http = requests.post(server.http + "/v1/predict", json=body, timeout=PATIENCE_S).json()[
        "predictions"
    ][0]
    assert over_http["windows"] == whole.windows and over_http["probabilities"] == pytest.approx(
        whole.probabilities
    )
    message = v2.ModelInferRequest(model_name="sentiment")
    message.inputs.add(name="text", datatype="BYTES", shape=[1]).contents.bytes_contents.append(LONG.encode())
    message.parameters["long_texts"].string_param = "windows"
    message.outputs.add(name="probabilities")
    with grpc.insecure_channel(server.target) as channel:
        answer = v2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(message)
    probabilities = np.frombuffer(answer.raw_output_contents[0], dtype="<f4").tolist()
    assert probabilities == pytest.approx(whole.probabilities, abs=1e-5)
    tei = requests.post(
        server.http + "/predict", json={"inputs": LONG, "truncate": False}, timeout=PATIENCE_S
    )
    by_label = {entry["label"]: entry["score"] for entry in tei.json()}
    assert [by_label["negative"], by_label["positive"]] == pytest.approx(whole.probabilities, abs=1e-5)
    bad = requests.post(server.http + "/v2/models/sentiment/infer", timeout=PATIENCE_S, json={
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": [LONG]}],
        "parameters": {"long_texts": "all of it"},
    })  # fmt: skip
    assert bad.status_code == 400 and "long_texts" in bad.json()["error"]


def test_a_server_may_read_long_texts_whole_by_default(whole_by_default: RunningServer) -> None:
    whole, _ = predict(whole_by_default)
    assert not whole.truncated and whole.windows > 2
    assert predict(whole_by_default, long_texts=pb.LONG_TEXTS_TRUNCATE)[0].truncated
    info = requests.get(whole_by_default.http + "/info", timeout=PATIENCE_S).json()
    assert info["auto_truncate"] is False
