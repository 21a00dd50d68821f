"""The per-kind report: every kind of the project's file and the movie test split, the model beside
the word-list scorers, written next to metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

from model_export.data import tweet_splits
from model_export.report import (
    DEFAULT_FILE,
    HARD,
    MEAN,
    MOVIES,
    NEGATIVE,
    PATIENTS,
    POSITIVE,
    TWEETS,
    UNMARKED,
    markdown,
    report,
    textblob,
    vader,
)


def test_word_list_scorers_tell_praise_from_complaint() -> None:
    texts = ["I love it, a wonderful and delightful film!", "Terrible. I hate it, an awful waste of money."]
    assert vader()(texts) == [POSITIVE, NEGATIVE]
    assert textblob()(texts) == [POSITIVE, NEGATIVE]


def test_report_scores_every_kind_and_writes_json_and_chart(model_dir: Path, cache_dir: Path) -> None:
    rows = [json.loads(line) for line in DEFAULT_FILE.read_text().splitlines() if line.strip()]
    kinds = {row["domain"] for row in rows}
    hard = {row["hard"] for row in rows if "hard" in row}
    assert len(hard) >= 5  # the file marks its hard cases
    table = report(model_dir, DEFAULT_FILE, cache_dir)
    by_difficulty = {HARD + h for h in hard} | {UNMARKED}
    assert set(table) == kinds | {MOVIES, TWEETS, PATIENTS, MEAN} | by_difficulty
    assert table[TWEETS]["texts"] == len(tweet_splits(cache_dir, 13)[0].test)  # the yardstick, beside movies
    # the kinds, their mean, then the rows by difficulty, which the mean leaves out
    assert list(table)[-len(by_difficulty) - 1] == MEAN
    assert table[MEAN]["texts"] == len(rows)
    assert sum(table[k]["texts"] for k in by_difficulty) == len(rows)
    assert table[HARD + "sarcasm"]["texts"] == sum(row.get("hard") == "sarcasm" for row in rows)
    for kind, row in table.items():
        assert row["texts"] > 0
        for scorer in ("model fp32", "VADER", "TextBlob"):
            assert 0.0 <= row[scorer] <= 1.0, (kind, scorer)
    others = [k for k in kinds]
    mean = sum(table[k]["VADER"] for k in others) / len(others)
    assert abs(table[MEAN]["VADER"] - mean) < 1e-3
    assert json.loads((model_dir / "domains.json").read_text()) == table
    assert (model_dir / "domains.png").read_bytes()[:4] == b"\x89PNG"
    assert markdown(table).count("\n") == len(table) + 1
