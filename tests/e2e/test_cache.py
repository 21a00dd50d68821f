"""Repeats are answered from the answer cache, identical texts in one request run once, a new version
never answers from an old version's entries, and --cache-entries 0 turns the cache off."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from sentiment_client import SentimentClient
from tests.e2e.conftest import PATIENCE_S, launch
from tests.e2e.test_http import call
from tests.e2e.test_versions import metric, model_copy, publish, reverse_classifier

if TYPE_CHECKING:
    from pathlib import Path

TEXTS = ["What a wonderful film.", "Dull and far too long.", "It was fine, I suppose.", "Loved every minute."]


def test_repeats_come_from_the_cache_of_the_version_that_answers(model_root: Path, tmp_path: Path) -> None:
    root = model_copy(model_root, tmp_path)
    publish(root, 2, reverse_classifier)  # a different build: its answers differ
    running = launch(
        root, tmp_path, "--model-control", "explicit", "--versions", "1", "--cache-entries", "64"
    )
    try:
        with SentimentClient(running.target, timeout_s=PATIENCE_S) as client:
            first = client.predict([*TEXTS, TEXTS[0]])  # the repeat inside the request runs once
            assert all(p.batch.batch_size > 0 for p in first)
            assert first[-1].probabilities == first[0].probabilities
            again = client.predict(TEXTS)
            assert [p.probabilities for p in again] == [p.probabilities for p in first[:-1]]
            assert all(p.batch.batch_size == 0 and p.batch.compute_seconds == 0 for p in again)
            assert metric(running, "sentiment_cache_texts_total", result="hit") == len(TEXTS)
            # summary attention is another question: run, then kept too
            summary = client.predict(TEXTS[0], attention="summary")
            assert summary.batch.batch_size > 0 and summary.attention is not None
            assert client.predict(TEXTS[0], attention="summary").batch.batch_size == 0
            # KServe over HTTP: a text from the cache and one run, their attention padded together
            infer = {
                "inputs": [
                    {
                        "name": "text",
                        "datatype": "BYTES",
                        "shape": [2],
                        "data": [TEXTS[0], "Brand new words."],
                    }
                ],
                "parameters": {"attention": "summary"},
            }
            status, _, body = call(running, "POST", "/v2/models/sentiment/infer", infer)
            assert status == 200, body
            outputs = {o["name"]: o for o in json.loads(body)["outputs"]}
            tokens = outputs["num_tokens"]["data"]
            assert outputs["rollout"]["shape"] == [2, max(tokens)]
            assert outputs["label"]["data"][0] == summary.label
            client.load([1, 2])  # version 2 is the default now
            newer = client.predict(TEXTS)
            assert all(p.batch.batch_size > 0 for p in newer)  # none from version 1's entries
            assert [p.probabilities for p in newer] != [p.probabilities for p in first[:-1]]
            assert client.model_info().default_version == 2
    finally:
        assert running.stop() == 0


def test_the_cache_is_off_with_no_entries(model_root: Path, tmp_path: Path) -> None:
    running = launch(model_root, tmp_path, "--cache-entries", "0", env={"SENTIMENT_CACHE_ENTRIES": "64"})
    try:
        with SentimentClient(running.target, timeout_s=PATIENCE_S) as client:
            client.predict(TEXTS)
            assert all(p.batch.batch_size > 0 for p in client.predict([*TEXTS, TEXTS[0]]))
            assert metric(running, "sentiment_cache_texts_total") == 0
    finally:
        assert running.stop() == 0
