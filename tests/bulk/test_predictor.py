"""The bulk predictor: the server's answers without a server, bad texts as errors, data frames."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest

from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from service.bulk.predictor import BulkLimits, SentimentPredictor
from service.core.results import TextResult
from tests.e2e.test_predict import sentences

if TYPE_CHECKING:
    from service.core.results import AttentionView

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def predictor(model_root: Path) -> SentimentPredictor:
    return SentimentPredictor(model_root, threads=2, attention="summary")


def test_importing_the_predictor_loads_no_server_or_training_library() -> None:
    code = (
        "import sys, service.bulk.predictor, service.bulk.score\n"
        "servers = {'grpc', 'starlette', 'uvicorn', 'torch'}\n"
        "loaded = sorted({m.split('.')[0] for m in sys.modules} & servers)\n"
        "print(','.join(loaded))"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert found == "", f"importing the bulk path loads {found}"


def test_answers_equal_the_servers_for_the_same_text_and_version(predictor, stub) -> None:
    texts = [*sentences(40, seed=5), "word " * 400]  # the last one truncated
    response = stub.Predict(pb.PredictRequest(texts=texts, attention=pb.ATTENTION_MODE_SUMMARY))
    ours = predictor.predict(texts)
    assert response.model_version == predictor.spec.version
    for text, served, result in zip(texts, response.predictions, ours, strict=True):
        assert isinstance(result, TextResult), result
        assert result.label == served.label, text
        assert result.score == pytest.approx(served.score, abs=1e-5)
        np.testing.assert_allclose(result.probabilities, served.probabilities, atol=1e-5)
        assert (result.truncated, result.num_tokens) == (served.truncated, served.num_tokens)
        view: AttentionView | None = result.attention
        assert view is not None and list(view.tokens) == list(served.attention.tokens)
        np.testing.assert_allclose(view.rollout, served.attention.rollout, atol=1e-5)
        np.testing.assert_allclose(view.cls_attention, served.attention.cls_attention, atol=1e-5)
    assert ours[-1].truncated  # type: ignore[union-attr]


def test_batches_keep_to_their_limits_and_answers_do_not_depend_on_them(model_root: Path) -> None:
    texts = sentences(70, seed=2)
    small = SentimentPredictor(
        model_root, threads=1, limits=BulkLimits(max_batch_size=3, max_batch_tokens=60)
    )
    large = SentimentPredictor(model_root, threads=2)
    few = small.predict(texts)
    many = large.predict(texts)
    sizes = [r.served.batch_size for r in few if isinstance(r, TextResult)]
    shared = [  # a text longer than the budget rides alone
        r.served.batch_size * r.served.padded_length
        for r in few
        if isinstance(r, TextResult) and r.served.batch_size > 1
    ]
    assert max(sizes) == 3 and max(shared) <= 60
    assert max(r.served.batch_size for r in many if isinstance(r, TextResult)) > 3
    for a, b in zip(few, many, strict=True):
        assert isinstance(a, TextResult) and isinstance(b, TextResult)
        assert a.label == b.label
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)


def test_a_text_that_cannot_be_scored_gets_a_reason_and_the_others_their_answers(predictor) -> None:
    given: list[object] = [
        "a fine film",
        "",
        "   \n",
        None,
        float("nan"),
        42,
        "x" * 20_001,
        "\u200b\u200b",
        "bad \udcff bytes",
        "a dull film",
    ]
    got = predictor.predict(given)
    assert isinstance(got[0], TextResult) and isinstance(got[-1], TextResult)
    assert got[1:-1] == [
        "is empty or only whitespace",
        "is empty or only whitespace",
        "is missing (the cell is empty)",
        "is missing (the cell is empty)",
        "is not a string but int",
        "has 20001 characters; the limit is 20000",
        "has no word the model can read (only spaces, control or zero-width characters)",
        "is not valid UTF-8",
    ]


def test_a_data_frame_gets_the_prediction_columns_and_keeps_its_own(predictor) -> None:
    frame = pd.DataFrame({"id": [7, 8, 9], "text": ["a fine film", "", "an awful film"]})
    out = predictor(frame)
    assert list(out["id"]) == [7, 8, 9] and list(out["text"]) == list(frame["text"])
    labels = predictor.labels
    assert set(out.columns) == {"id", "text", *predictor.column_names()}
    assert out["error"][1] == "the text is empty or only whitespace" and pd.isna(out["label"][1])
    for row in (0, 2):
        assert pd.isna(out["error"][row]) and out["label"][row] in labels
        total = sum(out[f"prob_{label}"][row] for label in labels)
        assert total == pytest.approx(1, abs=1e-5)
        assert len(out["tokens"][row]) == out["num_tokens"][row] == len(out["rollout"][row])
    as_dict = predictor({"id": np.array([1]), "text": np.array(["a fine film"], dtype=object)})
    assert as_dict["label"][0] == out["label"][0] and as_dict["id"][0] == 1


def test_full_attention_is_refused_for_tables(model_root: Path) -> None:
    with pytest.raises(ValueError, match="summary"):
        SentimentPredictor(model_root, attention="full")
