"""The per-kind report: every kind of the project's file and the movie test split, the model beside
the word-list scorers, written next to metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

from model_export.report import DEFAULT_FILE, NEGATIVE, POSITIVE, markdown, report, textblob, vader


def test_word_list_scorers_tell_praise_from_complaint() -> None:
    texts = ["I love it, a wonderful and delightful film!", "Terrible. I hate it, an awful waste of money."]
    assert vader()(texts) == [POSITIVE, NEGATIVE]
    assert textblob()(texts) == [POSITIVE, NEGATIVE]


def test_report_scores_every_kind_and_writes_json_and_chart(model_dir: Path, cache_dir: Path) -> None:
    kinds = {json.loads(line)["domain"] for line in DEFAULT_FILE.read_text().splitlines() if line.strip()}
    table = report(model_dir, DEFAULT_FILE, cache_dir)
    assert set(table) == kinds | {"movie (test split)", "mean of other kinds"}
    for kind, row in table.items():
        assert row["texts"] > 0
        for scorer in ("model fp32", "VADER", "TextBlob"):
            assert 0.0 <= row[scorer] <= 1.0, (kind, scorer)
    others = [k for k in kinds]
    mean = sum(table[k]["VADER"] for k in others) / len(others)
    assert abs(table["mean of other kinds"]["VADER"] - mean) < 1e-3
    assert json.loads((model_dir / "domains.json").read_text()) == table
    assert (model_dir / "domains.png").read_bytes()[:4] == b"\x89PNG"
    assert markdown(table).count("\n") == len(table) + 1
