"""The classify APIs of other servers on a real server's HTTP door, called as their users call them:
huggingface_hub's InferenceClient unmodified, vLLM's and SGLang's /v1/classify from a plain requests
script written from their documentation, Infinity's /classify, and text-embeddings-inference's
/predict, /tokenize, /info and /health. Each answers what /v1/predict answers for the same texts,
behind the same token, counted under its own method name, and refused in its own error shape."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from huggingface_hub import InferenceClient
from huggingface_hub.errors import HfHubHTTPError

from tests.e2e.conftest import PATIENCE_S, RunningServer, counted, launch

TOKEN = "classify-token-7"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TEXTS = ["What a wonderful film, I loved every minute.", "Dull, slow and far too long.", "ok"]
LONG = " ".join(["the acting was fine but the story dragged on"] * 40)  # far past the tiny model's window


@pytest.fixture(scope="module")
def guarded(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = launch(model_root, tmp_path_factory.mktemp("classify"), "--auth-token", TOKEN)
    try:
        yield running
    finally:
        assert running.stop() == 0, running.log()


def post(
    server: RunningServer, path: str, body: Any, headers: dict[str, str] | None = None
) -> requests.Response:
    return requests.post(
        server.http + path, json=body, headers=AUTH if headers is None else headers, timeout=PATIENCE_S
    )


def own_answer(server: RunningServer, texts: list[str]) -> list[dict[str, Any]]:
    """What the service's own API answers for `texts`: the reference every other shape must match."""
    response = post(server, "/v1/predict", {"texts": texts})
    assert response.status_code == 200, response.text
    predictions: list[dict[str, Any]] = response.json()["predictions"]
    return predictions


def close(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(math.isclose(x, y, abs_tol=1e-5) for x, y in zip(a, b, strict=True))


def test_vllm_classify_from_a_plain_requests_script(guarded: RunningServer) -> None:
    # as vLLM's and SGLang's documentation write the client: a model name and a list of texts
    payload = {"model": "sentiment", "input": TEXTS}
    response = requests.post(f"{guarded.http}/v1/classify", headers=AUTH, json=payload, timeout=PATIENCE_S)
    assert response.status_code == 200, response.text
    answer = response.json()
    own = own_answer(guarded, TEXTS)
    assert answer["object"] == "list" and answer["model"] == "sentiment"
    assert answer["id"].startswith("classify-") and answer["created"] > 0
    assert [d["index"] for d in answer["data"]] == [0, 1, 2]
    for data, reference in zip(answer["data"], own, strict=True):
        assert data["label"] == reference["label"] and data["num_classes"] == 2
        assert close(data["probs"], reference["probabilities"])
    tokens = sum(reference["numTokens"] for reference in own)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0}
    assert answer["usage"] == {**usage, "prompt_tokens_details": None}
    models = requests.get(f"{guarded.http}/v1/models", headers=AUTH, timeout=PATIENCE_S).json()
    assert [m["id"] for m in models["data"]] == ["sentiment"] and models["object"] == "list"
    # one string, no model named: one answer
    single = post(guarded, "/v1/classify", {"input": TEXTS[1]}).json()
    assert [d["label"] for d in single["data"]] == [own[1]["label"]]


def test_vllm_errors_come_in_openai_shape(guarded: RunningServer) -> None:
    unknown = post(guarded, "/v1/classify", {"model": "gpt-4", "input": "x"})
    assert unknown.status_code == 404
    error = unknown.json()["error"]
    assert error["type"] == "NotFoundError" and error["code"] == 404 and "gpt-4" in error["message"]
    for body, words in (
        ({"input": []}, "empty list"),
        ({"input": [101, 2023, 102]}, "token ids"),
        ({"input": ["fine", ""]}, "text 1 is empty"),
        ({"input": "fine", "truncate_prompt_tokens": 10}, "truncate_prompt_tokens"),
    ):
        refused = post(guarded, "/v1/classify", body)
        assert refused.status_code == 400, body
        assert (
            refused.json()["error"]["type"] == "BadRequestError"
            and words in refused.json()["error"]["message"]
        )
    anonymous = post(guarded, "/v1/classify", {"input": "fine"}, headers={})
    assert anonymous.status_code == 401 and anonymous.json()["error"]["type"] == "AuthenticationError"


def test_infinity_classify_ranks_the_labels(guarded: RunningServer) -> None:
    own = own_answer(guarded, TEXTS)
    answer = post(guarded, "/classify", {"input": TEXTS, "model": "sentiment"}).json()
    assert answer["object"] == "classify" and answer["id"].startswith("infinity-")
    raw = post(guarded, "/classify", {"input": TEXTS, "raw_scores": True}).json()
    for ranked, logits, reference in zip(answer["data"], raw["data"], own, strict=True):
        scores = [s["score"] for s in ranked]
        assert scores == sorted(scores, reverse=True) and ranked[0]["label"] == reference["label"]
        assert math.isclose(sum(scores), 1.0, abs_tol=1e-5)
        # the raw scores are the logits the probabilities are the softmax of
        by_label = {s["label"]: s["score"] for s in logits}
        exps = [math.exp(by_label[label]) for label in ("negative", "positive")]
        assert close([e / sum(exps) for e in exps], reference["probabilities"])
    assert answer["usage"]["prompt_tokens"] == sum(r["numTokens"] for r in own)


def test_huggingface_hub_inference_client_unmodified(guarded: RunningServer) -> None:
    client = InferenceClient(model=guarded.http, token=TOKEN, timeout=PATIENCE_S)
    own = own_answer(guarded, TEXTS)
    for text, reference in zip(TEXTS, own, strict=True):
        labels = client.text_classification(text)
        assert [e.label for e in labels][0] == reference["label"]
        by_label = {e.label: e.score for e in labels}
        assert close([by_label["negative"], by_label["positive"]], reference["probabilities"])
    top = client.text_classification(TEXTS[0], top_k=1, function_to_apply="sigmoid")
    assert len(top) == 1 and top[0].label == own[0]["label"] and 0.0 < top[0].score < 1.0
    with pytest.raises(HfHubHTTPError, match="empty"):
        client.text_classification("   ")
    with pytest.raises(HfHubHTTPError):
        InferenceClient(model=guarded.http, token="wrong").text_classification("fine")


def test_tei_predict_one_text_or_a_batch(guarded: RunningServer) -> None:
    own = own_answer(guarded, TEXTS)
    one = post(guarded, "/predict", {"inputs": TEXTS[0]}).json()
    assert one[0]["label"] == own[0]["label"] and [s["label"] for s in one] != []
    assert post(guarded, "/predict", {"inputs": [TEXTS[0]]}).json() == one
    batch = post(guarded, "/predict", {"inputs": [[t] for t in TEXTS], "raw_scores": False}).json()
    assert [ranked[0]["label"] for ranked in batch] == [r["label"] for r in own]
    pair = post(guarded, "/predict", {"inputs": ["first", "second"]})
    assert pair.status_code == 400 and pair.json()["error_type"] == "Validation"
    assert "cross-encoder" in pair.json()["error"]
    # a long text is cut by default (as the server's auto_truncate says), read whole when asked not to be
    cut = post(guarded, "/predict", {"inputs": LONG, "truncate": True}).json()
    assert post(guarded, "/predict", {"inputs": LONG}).json() == cut
    whole = post(guarded, "/predict", {"inputs": LONG, "truncate": False})
    assert whole.status_code == 200 and whole.json() != cut and len(whole.json()) == 2
    malformed = requests.post(
        guarded.http + "/predict", data=b"{not json", headers={**AUTH, "Content-Type": "application/json"},
        timeout=PATIENCE_S,
    )  # fmt: skip
    assert malformed.status_code == 400 and malformed.json()["error_type"] == "Validation"
    wrong_type = requests.post(guarded.http + "/predict", data=b"x", headers=AUTH, timeout=PATIENCE_S)
    assert wrong_type.status_code == 415 and "content type" in wrong_type.json()["error"]


def test_tei_tokenize_info_and_health(guarded: RunningServer) -> None:
    text = "Héllo, unbelievable film!"
    tokens = post(guarded, "/tokenize", {"inputs": text}).json()[0]
    assert tokens[0]["special"] and tokens[-1]["special"] and tokens[0]["start"] is None
    for token in tokens[1:-1]:
        assert not token["special"] and token["text"] == text[token["start"] : token["stop"]]
    plain = post(guarded, "/tokenize", {"inputs": [text, LONG], "add_special_tokens": False}).json()
    assert plain[0] == tokens[1:-1]
    info = requests.get(guarded.http + "/info", headers=AUTH, timeout=PATIENCE_S).json()
    assert len(plain[1]) > info["max_input_length"]  # what the model would cut is shown, not cut
    assert info["model_id"] == "sentiment" and info["auto_truncate"] is True
    assert info["model_type"]["classifier"]["id2label"] == {"0": "negative", "1": "positive"}
    assert requests.get(guarded.http + "/info", timeout=PATIENCE_S).status_code == 401
    health = requests.get(guarded.http + "/health", timeout=PATIENCE_S)  # no token needed
    assert health.status_code == 200 and health.content == b""


def test_each_route_is_counted_under_its_own_method(guarded: RunningServer) -> None:
    before_ok, before_bad = (
        counted(guarded, "http/v1/classify", "http"),
        counted(guarded, "http/predict", "http"),
    )
    post(guarded, "/v1/classify", {"input": "fine"})
    post(guarded, "/predict", {"inputs": ""})
    assert counted(guarded, "http/v1/classify", "http")["OK"] == before_ok["OK"] + 1
    assert counted(guarded, "http/predict", "http")["INVALID_ARGUMENT"] == before_bad["INVALID_ARGUMENT"] + 1
