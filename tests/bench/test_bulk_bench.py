"""The bulk benches end to end, briefly: four ways over the same texts, and a large file killed and
resumed with its memory read as it goes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
pytestmark = pytest.mark.long


def bench(*args: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_bulk_bench_measures_four_ways_and_writes_its_section(
    model_root: Path, cache_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "RESULTS.md").write_text("# Benchmark results\n\nthe run before\n")
    bench("bench", "bulk", "--model-dir", model_root, "--texts", "1500", "--cache-dir", cache_dir / "data",
          "--out", tmp_path)  # fmt: skip
    report = json.loads((tmp_path / "bulk.json").read_text())
    for way in ("ceiling", "bulk_command", "ray", "server_sdk_stream"):
        assert report[way]["texts_per_s"] > 0 and report[way]["busy_cores"] > 0
    text = (tmp_path / "RESULTS.md").read_text()
    assert text.startswith("# Benchmark results\n\nthe run before\n\n## Bulk scoring")
    assert "| bulk command, Parquet in and out |" in text and "1,500 texts" in text


def test_bulk_million_bench_resumes_a_killed_job_and_reads_its_memory(
    model_root: Path, cache_dir: Path, tmp_path: Path
) -> None:
    bench("bench.bulk_million", "--model-dir", model_root, "--rows", "60000", "--cache-dir",
          cache_dir / "data", "--out", tmp_path)  # fmt: skip
    report = json.loads((tmp_path / "bulk_million.json").read_text())
    assert 30_000 <= report["killed_after_rows"] < 60_000
    assert report["rows_out"] == 60_000
    assert report["every_id_once_in_order"] and report["sample_labels_equal"]
    assert report["rss_mib_by_tenth_first_run"] and report["rss_mib_by_tenth_resumed_run"]
    assert "every id once and in order: True" in (tmp_path / "RESULTS.md").read_text()
