"""Model monitoring on a real server: what the model answered and what it was asked, by model version,
counted from the very answers the callers got."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from sentiment_client.pb.sentiment.v1 import sentiment_pb2_grpc
from tests.e2e.conftest import PATIENCE_S, launch, scrape, wait_until

TEXTS = [
    "A wonderful, moving film.",
    "Dull and far too long.",
    "𓀀𓀁𓀂 𓀃",  # hieroglyphs: words the vocabulary does not hold
    "word " * 400,  # longer than the model reads
]


def test_answers_and_inputs_are_counted_by_version(model_root: Path, tmp_path: Path) -> None:
    running = launch(model_root, tmp_path)
    try:
        before = scrape(running)
        version = "1"
        # every series of the version exists before the first answer, at 0
        for label in ("negative", "positive"):
            key = ("sentiment_predictions_total", (("label", label), ("version", version)))
            assert before[key] == 0
        assert before[("sentiment_truncated_texts_total", (("version", version),))] == 0
        with grpc.insecure_channel(running.target) as channel:
            stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
            answer = stub.Predict(
                pb.PredictRequest(texts=TEXTS, attention=pb.ATTENTION_MODE_SUMMARY), timeout=PATIENCE_S
            )
        predictions = list(answer.predictions)
        wait_until(
            "the answers counted",
            lambda: (
                scrape(running)[("sentiment_prediction_confidence_count", (("version", version),))]
                == len(TEXTS)
            ),
        )
        after = scrape(running)
    finally:
        assert running.stop() == 0, running.log()

    def value(name: str, **labels: str) -> float:
        return after[(name, tuple(sorted({"version": version, **labels}.items())))]

    for label in ("negative", "positive"):
        answered = sum(p.label == label for p in predictions)
        assert value("sentiment_predictions_total", label=label) == answered
    assert value("sentiment_prediction_confidence_sum") == pytest.approx(sum(p.score for p in predictions))
    assert value("sentiment_text_tokens_sum") == sum(p.num_tokens for p in predictions)
    assert value("sentiment_truncated_texts_total") == sum(p.truncated for p in predictions) == 1
    unknown = [sum(t == "[UNK]" for t in p.attention.tokens) / p.num_tokens for p in predictions]
    assert unknown[2] > 0 and unknown[0] == 0
    assert value("sentiment_unknown_token_share_sum") == pytest.approx(sum(unknown))
    # a confidence of at least 0.5 always lands in the first bucket
    assert value("sentiment_prediction_confidence_bucket", le="0.5") <= value(
        "sentiment_prediction_confidence_bucket", le="1.0"
    )
