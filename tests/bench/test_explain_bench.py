"""The explanations bench end to end, briefly: an explanation's latency, a probe beside a flood of
them, and its section of RESULTS.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.explain import thirty_words

ROOT = Path(__file__).resolve().parent.parent.parent
pytestmark = pytest.mark.long


def test_texts_of_thirty_words_are_picked_or_joined() -> None:
    texts = ["one two three", " ".join(["word"] * 30), "four five six seven"] * 20
    picked = thirty_words(texts, 25)
    assert len(picked) == 25 and all(28 <= len(t.split()) <= 32 for t in picked)


def test_explain_bench_times_explanations_and_a_probe_beside_them(
    model_root: Path, cache_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "RESULTS.md").write_text("# Benchmark results\n\nthe run before\n")
    done = subprocess.run(
        [sys.executable, "-m", "bench", "explain", "--model-dir", str(model_root), "--cache-dir",
         str(cache_dir / "data"), "--texts", "6", "--duration", "4", "--probe-rate", "5", "--rounds", "1",
         "--flood-callers", "2", "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "explain.json").read_text())
    for name in ("plain", "shapley", "occlusion"):
        assert report["latency"][name]["p50_ms"] > 0
    assert report["latency"]["shapley"]["passes_mean"] > report["latency"]["shapley"]["words_mean"] > 10
    assert report["probe_alone"]["probe_requests"] > 0 and report["plain_flood_texts_per_request"] > 5
    for flood in ("explanations", "plain"):
        assert report[f"probe_{flood}"]["probe_p99_ms"] > 0
        assert report[f"probe_{flood}"]["flood_requests_per_s"] > 0
    text = (tmp_path / "RESULTS.md").read_text()
    assert text.startswith("# Benchmark results\n\nthe run before\n\n## Explanations: what one costs")
    assert "| explained: Shapley (default) |" in text
    assert "| beside plain requests of the same work |" in text
