"""The faithfulness figures: ERASER's measures computed through the served graph with the server's
own explanations, exact where they can be checked by hand, and the command end to end."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from model_export.faithfulness import FRACTIONS, METHODS, measure, runner
from service.core.explain import Method, explanation, plan
from service.core.preprocess import Preprocessor
from service.core.runtime import OnnxModel

ROOT = Path(__file__).resolve().parent.parent.parent
SHORT = ["A warm and funny film.", "Dull, slow and far too long.", "The cast is good but the plot is thin."]


def test_occlusion_removing_its_top_word_is_its_largest_contribution(model_dir: Path) -> None:
    """For texts of at most ten words, 10% is one word: occlusion's comprehensiveness there is the
    mean of each text's largest contribution, by definition."""
    result = measure(model_dir, {"short": SHORT}, threads=1)
    methods = result["splits"]["short"]["methods"]  # type: ignore[index]
    assert set(methods) == set(METHODS) and result["fractions"] == list(FRACTIONS)
    pre = Preprocessor(model_dir / "tokenizer.json", 64, 8, 10_000)
    model = OnnxModel(model_dir / "model.onnx")
    largest = []
    for e, words in zip(pre.tokenize(SHORT), pre.words(SHORT), strict=True):
        chosen = plan(e.ids, words, Method.OCCLUSION)
        largest.append(float(explanation(chosen, runner(model)(chosen.sequences)).contributions.max()))
    assert methods["occlusion"]["comprehensiveness"][0] == pytest.approx(np.mean(largest), abs=1e-4)
    for row in methods.values():
        assert all(-1 <= v <= 1 for v in row["comprehensiveness"] + row["sufficiency"])
        assert row["comprehensiveness_mean"] == pytest.approx(np.mean(row["comprehensiveness"]), abs=1e-3)


def test_the_command_scores_both_test_splits_and_writes_its_figures(
    model_dir: Path, cache_dir: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "sentiment" / "1"
    shutil.copytree(model_dir, copy)
    done = subprocess.run(
        [sys.executable, "-m", "model_export", "faithfulness", str(copy), "--texts", "12", "--threads", "1",
         "--cache-dir", str(cache_dir)],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    written = json.loads((copy / "faithfulness.json").read_text())
    assert set(written["splits"]) == {"movies", "tweets"}
    assert all(0 < entry["texts"] <= 12 for entry in written["splits"].values())
    assert (copy / "faithfulness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| movies (" in done.stdout and "| tweets (" in done.stdout and "| shapley |" in done.stdout
