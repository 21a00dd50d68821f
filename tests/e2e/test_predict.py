"""sentiment.v1 against a real server: answers, batching invariance, attention, errors, streams."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import numpy as np
import pytest

from model_export.classifier import OnnxClassifier
from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from sentiment_client.pb.sentiment.v1 import sentiment_pb2_grpc
from service.ops.settings import Settings

if TYPE_CHECKING:
    from tests.e2e.conftest import RunningServer

WORDS = "the film was a great sad brilliant dull story with moving acting and awful plot twists".split()


def sentences(count: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 40)))) for _ in range(count)]


def test_predictions_equal_onnx_runtime_run_directly(stub, model_dir: Path) -> None:
    texts = sentences(12)
    response = stub.Predict(pb.PredictRequest(texts=texts))
    reference = OnnxClassifier(model_dir)
    logits = reference.logits_of_ids([e.ids for e in reference.tokenizer.encode_batch(texts)])
    expected = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert len(response.predictions) == len(texts)
    for prediction, probabilities in zip(response.predictions, expected, strict=True):
        np.testing.assert_allclose(prediction.probabilities, probabilities, atol=1e-5)
        assert prediction.label == reference.labels[int(probabilities.argmax())]
        assert prediction.score == pytest.approx(float(probabilities.max()), abs=1e-5)
    assert response.model_name == "sentiment" and response.model_version == 1


async def test_batched_results_equal_alone_under_concurrent_load(server: RunningServer) -> None:
    texts = sentences(96, seed=1)
    async with grpc.aio.insecure_channel(server.target) as channel:
        stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
        alone = [await stub.Predict(pb.PredictRequest(texts=[t])) for t in texts]
        together = await asyncio.gather(*(stub.Predict(pb.PredictRequest(texts=[t])) for t in texts))
    assert max(r.predictions[0].batch.batch_size for r in together) > 1, "no batch formed"
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_allclose(a.predictions[0].probabilities, b.predictions[0].probabilities, atol=1e-5)
        assert a.predictions[0].label == b.predictions[0].label


def test_every_response_says_how_it_was_served(stub) -> None:
    response = stub.Predict(pb.PredictRequest(texts=["a fine film", "a bad film", "short"]))
    for prediction in response.predictions:
        batch = prediction.batch
        assert 1 <= batch.batch_size <= 3 and batch.padded_length >= prediction.num_tokens
        assert batch.compute_seconds > 0 and batch.queue_seconds >= 0
    assert response.predictions[2].num_tokens == 3  # [CLS] short [SEP]
    alike = stub.Predict(pb.PredictRequest(texts=["a fine film"] * 4)).predictions
    assert {p.batch.batch_size for p in alike} <= {2, 4}  # shared among idle workers, or one batch
    assert all(p.batch.padded_length == p.num_tokens for p in alike)


def test_summary_attention_is_cropped_and_normalised(stub) -> None:
    texts = ["great", "the film was a great story with moving acting"]
    response = stub.Predict(pb.PredictRequest(texts=texts, attention=pb.ATTENTION_MODE_SUMMARY))
    for prediction in response.predictions:
        attention = prediction.attention
        assert len(attention.tokens) == prediction.num_tokens
        assert attention.tokens[0] == "[CLS]" and attention.tokens[-1] == "[SEP]"
        assert len(attention.cls_attention) == len(attention.rollout) == prediction.num_tokens
        assert sum(attention.cls_attention) == pytest.approx(1.0, abs=1e-4)
        assert sum(attention.rollout) == pytest.approx(1.0, abs=1e-4)
        assert not attention.weights
    assert not stub.Predict(pb.PredictRequest(texts=texts)).predictions[0].HasField("attention")


def test_full_attention_has_every_layer_and_head_over_real_tokens(stub, model_dir: Path) -> None:
    config = json.loads((model_dir / "config.json").read_text())["model"]
    response = stub.Predict(
        pb.PredictRequest(texts=["ok", "the acting was brilliant"], attention=pb.ATTENTION_MODE_FULL)
    )
    for prediction in response.predictions:
        a = prediction.attention
        n = prediction.num_tokens
        assert (a.num_layers, a.num_heads) == (config["n_layers"], config["n_heads"])
        weights = np.array(a.weights).reshape(a.num_layers, a.num_heads, n, n)
        np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-4)


def test_hostile_but_valid_texts_are_answered(stub) -> None:
    texts = ["\x00\x01 nul and control", "😀" * 500, "x" * 19_999, "é" * 100, "<script>alert(1)</script>"]
    response = stub.Predict(pb.PredictRequest(texts=texts))
    assert len(response.predictions) == len(texts)
    assert response.predictions[2].num_tokens <= 64
    long = stub.Predict(pb.PredictRequest(texts=[" ".join(WORDS * 20)]))
    assert long.predictions[0].truncated and long.predictions[0].num_tokens == 64


@pytest.mark.parametrize(
    ("request_", "code", "fragment"),
    [
        (pb.PredictRequest(), grpc.StatusCode.INVALID_ARGUMENT, "no texts"),
        (pb.PredictRequest(texts=["fine", "  \n"]), grpc.StatusCode.INVALID_ARGUMENT, "text 1 is empty"),
        (pb.PredictRequest(texts=["x" * 20_001]), grpc.StatusCode.INVALID_ARGUMENT, "20001 characters"),
        (
            pb.PredictRequest(texts=["a"] * 257),
            grpc.StatusCode.INVALID_ARGUMENT,
            "257 texts; the limit is 256",
        ),
        (pb.PredictRequest(texts=["a"], attention=9), grpc.StatusCode.INVALID_ARGUMENT, "attention mode 9"),
        (
            pb.PredictRequest(texts=["a"], model_version=5),
            grpc.StatusCode.NOT_FOUND,
            "version 5 does not exist",
        ),
    ],
)
def test_bad_requests_get_clear_errors(stub, request_, code, fragment) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(request_)
    assert caught.value.code() == code
    assert fragment in caught.value.details()


def test_bytes_that_are_not_a_request_are_invalid_argument(server: RunningServer) -> None:
    with grpc.insecure_channel(server.target) as channel:
        call = channel.unary_unary("/sentiment.v1.SentimentService/Predict")
        for garbage in (b"\x0a\x02\xff\xfe", b"\xff" * 64):
            with pytest.raises(grpc.RpcError) as caught:
                call(garbage)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "not a valid sentiment.v1.PredictRequest" in caught.value.details()
        stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
        assert stub.Predict(pb.PredictRequest(texts=["still up"])).predictions


def test_stream_answers_every_request_and_reports_errors_inline(stub) -> None:
    texts = sentences(40, seed=3)
    requests = [
        pb.PredictStreamRequest(request_id=f"r{i}", request=pb.PredictRequest(texts=[t]))
        for i, t in enumerate(texts)
    ]
    requests.insert(5, pb.PredictStreamRequest(request_id="bad", request=pb.PredictRequest(texts=[""])))
    responses = {r.request_id: r for r in stub.PredictStream(iter(requests))}
    assert set(responses) == {r.request_id for r in requests}
    bad = responses["bad"]
    assert bad.WhichOneof("result") == "error"
    assert bad.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "empty" in bad.error.message
    unary = stub.Predict(pb.PredictRequest(texts=texts))
    for i, expected in enumerate(unary.predictions):
        got = responses[f"r{i}"].response.predictions[0]
        np.testing.assert_allclose(got.probabilities, expected.probabilities, atol=1e-5)


def test_model_info_describes_the_model(stub, model_dir: Path) -> None:
    config = json.loads((model_dir / "config.json").read_text())
    info = stub.GetModelInfo(pb.GetModelInfoRequest())
    assert list(info.labels) == config["labels"] and info.version == 1
    assert info.max_length == config["max_length"] and info.num_layers == config["model"]["n_layers"]
    assert json.loads(info.metrics_json)["accuracy"] == config["metrics"]["test"]["accuracy"]
    assert list(info.available_versions) == [1] and info.execution_provider == "CPUExecutionProvider"


def test_oversized_message_is_refused_and_server_stays_up(stub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        # a message over the server's default limit is stopped by the transport, before any parsing
        stub.Predict(pb.PredictRequest(texts=["x" * (Settings().max_message_bytes + 1024 * 1024)]))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert stub.Predict(pb.PredictRequest(texts=["still answering"])).predictions
