"""The priorities bench end to end, briefly: a probe alone and beside a flood, with and without
priorities, and its section of RESULTS.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
pytestmark = pytest.mark.long


def test_priority_bench_measures_the_probe_three_ways_and_writes_its_section(
    model_root: Path, cache_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "RESULTS.md").write_text("# Benchmark results\n\nthe run before\n")
    done = subprocess.run(
        [sys.executable, "-m", "bench", "priority", "--model-dir", str(model_root), "--cache-dir",
         str(cache_dir / "data"), "--duration", "4", "--probe-rate", "5", "--rounds", "1",
         "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "priority.json").read_text())
    assert report["capacity_texts_per_s"] > 0
    for run in ("alone", "with_priorities", "without_priorities"):
        assert report[run]["probe_requests"] > 0 and report[run]["probe_p99_ms"] > 0
    for run in ("with_priorities", "without_priorities"):
        assert report[run]["flood_served_texts_per_s"] > 0
    # the flood's texts were queued as low, the probe's as high
    counted = report["queue_waits_with_priorities"][0]
    assert counted["low_count"] > counted["high_count"] > 0 and counted["normal_count"] == 0
    text = (tmp_path / "RESULTS.md").read_text()
    assert text.startswith("# Benchmark results\n\nthe run before\n\n## Priorities: interactive callers")
    assert "| beside the flood, probe HIGH, flood LOW |" in text
