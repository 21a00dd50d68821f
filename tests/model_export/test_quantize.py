"""The int8 variant's plans: which weights stay fp32, and which plan the build keeps."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx
import pytest
from typer.testing import CliRunner

from model_export import quantize
from model_export.cli import app
from model_export.quantize import (
    INT8_FILE,
    PLANS,
    DevSplit,
    Plan,
    allowance,
    choose,
    excess,
    kept_nodes,
    write,
)


def test_a_split_may_lose_a_point_or_one_text_where_it_is_too_small_to_show_one() -> None:
    assert allowance(DevSplit("large", ["t"] * 2000, [0] * 2000)) == quantize.SPLIT_TOLERANCE
    assert allowance(DevSplit("small", ["t"] * 89, [0] * 89)) == pytest.approx(1 / 89)


def test_a_plan_is_judged_on_every_dev_text_pooled_and_on_each_split() -> None:
    movies, tweets, patients = (
        DevSplit(n, ["t"] * k, [0] * k) for n, k in (("m", 1275), ("t", 1636), ("p", 89))
    )
    dev = [movies, tweets, patients]
    fp32 = {"m": 0.850, "t": 0.903, "p": 0.618}
    # 9 tweets lost of 1636 (0.55 points) and nothing else: 0.3 points pooled, within both
    assert excess(fp32, {"m": 0.850, "t": 0.903 - 9 / 1636, "p": 0.618}, dev) <= 0
    # two of the 89 patient reviews lost, though more tweets were won: one split beyond its allowance
    beyond = excess(fp32, {"m": 0.850, "t": 0.903 + 4 / 1636, "p": 0.618 - 2 / 89}, dev)
    assert beyond == pytest.approx(1 / 89)
    # 26 movie snippets lost and 12 tweets won: 2 points on movies, and 0.47 points pooled
    assert excess(fp32, {"m": 0.850 - 26 / 1275, "t": 0.903 + 12 / 1636, "p": 0.618}, dev) == pytest.approx(
        26 / 1275 - 0.01
    )
    # a point lost on every split: within each split's allowance, beyond the pooled one
    assert excess(fp32, {k: v - 0.009 for k, v in fp32.items()}, [movies, tweets]) == pytest.approx(0.004)


def weight_matmuls(path: Path) -> list[str]:
    """Names of the MatMul nodes that still multiply by a stored (fp32) weight."""
    graph = onnx.load(str(path)).graph
    stored = {i.name for i in graph.initializer}
    return sorted(n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in stored)


@pytest.fixture
def version(model_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "version"
    copy.mkdir()
    for name in ("model.onnx", "config.json", "tokenizer.json"):
        shutil.copy(model_dir / name, copy / name)
    return copy


def dev_of(version: Path) -> list[DevSplit]:
    texts = ["a great film", "an awful, boring mess", "fine", "the worst service ever", "loved it"] * 4
    labels = [1, 0, 1, 0, 1] * 4
    return [DevSplit("one", texts[:10], labels[:10]), DevSplit("two", texts[10:], labels[10:])]


def test_each_plan_leaves_exactly_its_weights_in_fp32(version: Path) -> None:
    layers = onnx.load(str(version / "model.onnx")).graph
    assert len(weight_matmuls(version / "model.onnx")) >= 6  # every linear layer before quantising
    for plan in PLANS:
        kept = write(version, plan)
        assert kept == kept_nodes(version / "model.onnx", plan)
        assert all(any(part in name for part in plan.kept) for name in kept)
        assert weight_matmuls(version / INT8_FILE) == sorted(kept)
    # the feed-forward output projection is one node per layer
    assert len(kept_nodes(version / "model.onnx", PLANS[1])) == sum(
        1 for n in layers.node if n.op_type == "MatMul" and n.name.endswith("/ff/w_2/MatMul")
    )


def test_the_first_plan_within_tolerance_is_kept_and_nothing_after_it_is_tried(version: Path) -> None:
    plan, reference, tried = choose(version, dev_of(version), plans=PLANS)
    assert set(reference) == {"one", "two"}
    beyond = [t["excess"] for t in tried]
    # every plan before the kept one lost more than it may on dev; the kept one did not
    assert all(e > 0 for e in beyond[:-1]) and beyond[-1] <= 1e-9
    for t in tried:
        assert t["excess"] == pytest.approx(excess(reference, t["dev_accuracy"], dev_of(version)))
    assert plan.name == tried[-1]["plan"]
    assert weight_matmuls(version / INT8_FILE) == sorted(kept_nodes(version / "model.onnx", plan))


def test_when_no_plan_is_within_tolerance_the_closest_is_written(
    version: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(quantize, "TOLERANCE", -1.0)  # no plan can keep accuracy within it
    plans = (Plan("feed-forward fp32", ("/ff/w_1/", "/ff/w_2/")), Plan("every weight int8"))
    plan, _, tried = choose(version, dev_of(version), plans=plans)
    assert [t["plan"] for t in tried] == [p.name for p in plans]
    best = min(tried, key=lambda t: t["excess"])
    assert plan.name == best["plan"]
    # the file on disk is the kept plan's, even when it was not the last one written
    assert len(weight_matmuls(version / INT8_FILE)) == best["fp32_nodes"]


def test_the_plans_command_scores_every_plan_on_every_split_and_leaves_the_version_alone(
    model_dir: Path, cache_dir: Path
) -> None:
    before = {p.name: p.read_bytes() for p in model_dir.iterdir() if p.is_file()}
    done = CliRunner().invoke(app, ["int8-plans", str(model_dir), "--cache-dir", str(cache_dir)])
    assert done.exit_code == 0, done.output
    lines = [line for line in done.output.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == ["graph"] + [
        f"{c} {p}" for c in ("movies", "tweets", "patient reviews") for p in ("dev", "test")
    ]
    rows = {line.strip("|").split("|")[0].strip(): line for line in lines[1:]}
    assert list(rows) == ["fp32"] + [plan.name for plan in PLANS]
    for line in rows.values():
        figures = [float(cell) for cell in line.strip("|").split("|")[1:]]
        assert len(figures) == 6 and all(0 <= f <= 100 for f in figures)
    assert {p.name: p.read_bytes() for p in model_dir.iterdir() if p.is_file()} == before
