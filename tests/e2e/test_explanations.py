"""Explanations on a real server: the words' contributions through every door with the same numbers,
clear refusals, and the work counted apart."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import requests

from sentiment_client.pb.inference import grpc_predict_v2_pb2 as v2
from sentiment_client.pb.inference import grpc_predict_v2_pb2_grpc as v2_grpc
from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from sentiment_client.pb.sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from tests.e2e.conftest import PATIENCE_S, RunningServer, scrape

TEXTS = ["The flight was delayed four hours and the staff were rude.", "What a wonderful, warm film!"]


def predict(server: RunningServer, texts: list[str], **fields: object) -> list[pb.Prediction]:
    with grpc.insecure_channel(server.target) as channel:
        response = pb_grpc.SentimentServiceStub(channel).Predict(pb.PredictRequest(texts=texts, **fields))
    return list(response.predictions)


def kserve_request(texts: list[str], explain: str | None) -> v2.ModelInferRequest:
    message = v2.ModelInferRequest(model_name="sentiment")
    tensor = message.inputs.add(name="text", datatype="BYTES", shape=[len(texts)])
    tensor.contents.bytes_contents.extend(t.encode() for t in texts)
    if explain is not None:
        message.parameters["explain"].string_param = explain
    for name in ("label", "num_words", "words", "contributions"):
        message.outputs.add(name=name)
    message.parameters["typed_output"].bool_param = True
    return message


@pytest.mark.parametrize(
    "mode, method", [(pb.EXPLAIN_MODE_SHAPLEY, "shapley"), (pb.EXPLAIN_MODE_OCCLUSION, "occlusion")]
)
def test_every_door_gives_the_same_words_and_contributions(
    server: RunningServer, mode: int, method: str
) -> None:
    before = scrape(server)
    explained = predict(server, TEXTS, explain=mode)
    plain = predict(server, TEXTS)
    for text, with_why, without in zip(TEXTS, explained, plain, strict=True):
        assert not without.HasField("explanation")
        why = with_why.explanation
        assert why.method == method and why.label == with_why.label
        assert with_why.probabilities == pytest.approx(without.probabilities, abs=1e-5)
        assert [w.text for w in why.words] == [text[w.start : w.end] for w in why.words]
        assert "".join(w.text for w in why.words) == text.replace(" ", "")
        assert all(-1 <= w.contribution <= 1 for w in why.words)
        if method == "shapley":
            total = sum(w.contribution for w in why.words)
            assert total == pytest.approx(with_why.score - why.baseline, abs=1e-4)
        assert why.passes > len(why.words)
    # sentiment.v1 over HTTP/JSON
    body = {"texts": TEXTS, "explain": pb.ExplainMode.Name(mode)}
    over_http = requests.post(server.http + "/v1/predict", json=body, timeout=PATIENCE_S)
    assert over_http.status_code == 200, over_http.text
    for answer, expected in zip(over_http.json()["predictions"], explained, strict=True):
        words = answer["explanation"]["words"]
        assert [w["text"] for w in words] == [w.text for w in expected.explanation.words]
        assert [w.get("contribution", 0.0) for w in words] == pytest.approx(
            [w.contribution for w in expected.explanation.words], abs=1e-6
        )
    # KServe v2 over gRPC and over HTTP
    with grpc.insecure_channel(server.target) as channel:
        answer = v2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(kserve_request(TEXTS, method))
    outputs = {o.name: o for o in answer.outputs}
    counts = list(outputs["num_words"].contents.int_contents)
    assert counts == [len(p.explanation.words) for p in explained]
    width = max(counts)
    assert list(outputs["words"].shape) == [len(TEXTS), width]
    contributions = np.array(outputs["contributions"].contents.fp32_contents).reshape(len(TEXTS), width)
    for row, prediction in enumerate(explained):
        assert contributions[row, : counts[row]].tolist() == pytest.approx(
            [w.contribution for w in prediction.explanation.words], abs=1e-6
        )
        assert not contributions[row, counts[row] :].any()
    kserve_http = requests.post(server.http + "/v2/models/sentiment/infer", timeout=PATIENCE_S, json={
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(TEXTS)], "data": TEXTS}],
        "parameters": {"explain": method},
    })  # fmt: skip
    assert kserve_http.status_code == 200, kserve_http.text
    by_name = {o["name"]: o for o in kserve_http.json()["outputs"]}
    assert by_name["contributions"]["data"] == pytest.approx(contributions.ravel().tolist(), abs=1e-6)
    after = scrape(server)
    key = ("sentiment_explained_texts_total", (("method", method),))
    assert after[key] - before.get(key, 0.0) == 4 * len(TEXTS)  # gRPC, JSON, KServe gRPC and HTTP
    passes = ("sentiment_explanation_passes_total", (("method", method),))
    assert after[passes] - before.get(passes, 0.0) == 4 * sum(p.explanation.passes for p in explained)


def test_naming_an_explanation_output_asks_for_the_default_explanation(server: RunningServer) -> None:
    with grpc.insecure_channel(server.target) as channel:
        answer = v2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(kserve_request(TEXTS[:1], None))
    contributions = list({o.name: o for o in answer.outputs}["contributions"].contents.fp32_contents)
    expected = predict(server, TEXTS[:1], explain=pb.EXPLAIN_MODE_SHAPLEY)[0].explanation
    assert contributions == pytest.approx([w.contribution for w in expected.words], abs=1e-6)


def test_bad_explanation_requests_are_refused_clearly(server: RunningServer) -> None:
    with pytest.raises(grpc.RpcError) as unknown:
        predict(server, TEXTS, explain=9)
    assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "explain mode 9 is unknown" in str(unknown.value.details())
    many = [" ".join(["good"] * 200)] * 12  # the words the model reads of each: max_length less 2
    with pytest.raises(grpc.RpcError) as too_many:
        predict(server, many, explain=pb.EXPLAIN_MODE_OCCLUSION)
    assert too_many.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "the limit is 512 per request" in str(too_many.value.details())
    long = " ".join(["a fine and moving film"] * 80)
    with pytest.raises(grpc.RpcError) as whole:
        predict(server, [long], explain=pb.EXPLAIN_MODE_SHAPLEY, long_texts=pb.LONG_TEXTS_WINDOWS)
    assert whole.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "cannot be explained when read whole" in str(whole.value.details())
    cut = predict(server, [long], explain=pb.EXPLAIN_MODE_OCCLUSION)[0]
    assert cut.truncated and cut.explanation.words[-1].end < len(long)  # the words the model read
    bad = requests.post(server.http + "/v2/models/sentiment/infer", timeout=PATIENCE_S, json={
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": TEXTS[:1]}],
        "parameters": {"explain": "lime"},
    })  # fmt: skip
    assert bad.status_code == 400 and "explain='lime' is unknown" in bad.json()["error"]
    assert scrape(server)[("sentiment_explained_texts_total", (("method", "occlusion"),))] >= 1
