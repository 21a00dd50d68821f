"""The presets bench end to end, briefly: two versions side by side, each on the graph it is served
as, and its section of RESULTS.md."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
pytestmark = pytest.mark.long


def test_presets_bench_measures_both_versions_and_writes_its_section(
    model_root: Path, cache_dir: Path, tmp_path: Path
) -> None:
    # the tiny model stands for both presets; the "large" one has no int8 graph, so serves fp32
    large = tmp_path / "large"
    shutil.copytree(model_root / "1", large / "1")
    (large / "1" / "model.int8.onnx").unlink(missing_ok=True)
    (tmp_path / "RESULTS.md").write_text("# Benchmark results\n\nthe run before\n")
    done = subprocess.run(
        [sys.executable, "-m", "bench", "presets", "--model-dir", str(model_root), "--large-dir", str(large),
         "--cache-dir", str(cache_dir / "data"), "--duration", "2", "--rounds", "2", "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "presets.json").read_text())
    assert report["models"]["large"]["variant"] == "fp32"
    assert report["models"]["large"]["why"] == "the version has no int8 graph"
    assert set(report["models"]) == {"default", "large"} and set(report["large_over_default"]) == {"auto"}
    for model in report["models"].values():
        figures = model["figures"]
        assert figures["ort_batch1"]["sentences_per_s"] > 0 and figures["ort_sorted32"]["sentences_per_s"] > 0
        assert 0 < figures["server_1_caller"]["p50_ms"] <= figures["server_1_caller"]["p99_ms"]
        assert figures["server_64_callers"]["sentences_per_s"] > 0
    ratios = report["large_over_default"]["auto"]
    default, fp32 = report["models"]["default"]["figures"], report["models"]["large"]["figures"]
    assert ratios["server_64_callers_texts_per_s"] == pytest.approx(
        fp32["server_64_callers"]["sentences_per_s"] / default["server_64_callers"]["sentences_per_s"]
    )
    text = (tmp_path / "RESULTS.md").read_text()
    assert text.startswith("# Benchmark results\n\nthe run before\n\n## Presets: the default model beside")
    assert f"| large (`{report['models']['large']['preset']}`) | fp32," in text
    assert "- `large` against the default, auto: " in text


def test_presets_bench_measures_each_graph_named(model_root: Path, cache_dir: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "presets", "--model-dir", str(model_root), "--large-dir",
         str(model_root), "--cache-dir", str(cache_dir / "data"), "--duration", "1", "--rounds", "1",
         "--variants", "fp32", "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "presets.json").read_text())
    assert set(report["models"]) == {"default, fp32", "large, fp32"}
    assert all(m["variant"] == "fp32" for m in report["models"].values())
    assert set(report["large_over_default"]) == {"fp32"}
