"""The long-texts bench end to end on the tiny model: cut against read whole, at a window narrow
enough that the test splits hold texts longer than it, and its section of RESULTS.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
pytestmark = pytest.mark.long


def test_long_texts_bench_compares_cut_and_whole(model_root: Path, cache_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "RESULTS.md").write_text("# Benchmark results\n\nthe run before\n")
    done = subprocess.run(
        [sys.executable, "-m", "bench.long_texts", "--model-dir", str(model_root), "--cache-dir",
         str(cache_dir / "data"), "--windows", "0,16", "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "long_texts.json").read_text())
    narrow = report["by_window"]["16"]
    assert any(row["texts"] for row in narrow.values())
    for row in narrow.values():
        if row["texts"]:
            assert row["windows_mean"] >= 2 and 0 <= row["cut"] <= 1 and 0 <= row["whole"] <= 1
    text = (tmp_path / "RESULTS.md").read_text()
    assert "## Long texts: cut or read whole" in text and "| 16 | movie snippets" in text
