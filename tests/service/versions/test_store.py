"""Finding and checking the model directory before anything is served."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from service.core.errors import ModelDirectoryError
from service.versions.store import load_spec


def test_highest_version_is_chosen_unless_one_is_named(model_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "sentiment"
    shutil.copytree(model_root / "1", root / "1")
    shutil.copytree(model_root / "1", root / "3")
    (root / "notes").mkdir()
    assert load_spec(root, "sentiment", None).version == 3
    spec = load_spec(root, "sentiment", 1)
    assert spec.version == 1 and spec.labels == ("negative", "positive") and spec.max_length == 64
    with pytest.raises(ModelDirectoryError, match=r"has no version 2; it has \[1, 3\]"):
        load_spec(root, "sentiment", 2)


def test_broken_directories_are_refused_with_the_reason(model_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "sentiment"
    shutil.copytree(model_root / "1", root / "1")
    (root / "1" / "tokenizer.json").unlink()
    with pytest.raises(ModelDirectoryError, match="lacks tokenizer.json"):
        load_spec(root, "sentiment", None)
    shutil.copy(model_root / "1" / "tokenizer.json", root / "1" / "tokenizer.json")
    (root / "1" / "config.json").write_text(json.dumps({"labels": ["a", "b"]}))
    with pytest.raises(ModelDirectoryError, match="not a valid model config"):
        load_spec(root, "sentiment", None)


def with_int8(
    root: Path, accuracy: dict[str, dict[str, float]] | None, plans: dict[str, Any] | None = None
) -> Path:
    """Version 1 of `root` given an int8 graph (a copy of the fp32 one: any valid graph serves here)
    and, unless None, the build's accuracy of both graphs by kind of text and its plans' dev verdict."""
    version = root / "1"
    shutil.copy(version / "model.onnx", version / "model.int8.onnx")
    config = json.loads((version / "config.json").read_text())
    config["sha256"]["model.int8.onnx"] = config["sha256"]["model.onnx"]
    config["quantized"] = (
        {"file": "model.int8.onnx"} | ({"accuracy": accuracy} if accuracy else {}) | (plans or {})
    )
    (version / "config.json").write_text(json.dumps(config))
    return root


def test_auto_serves_int8_only_where_the_build_measured_it_as_accurate(
    model_root: Path, tmp_path: Path
) -> None:
    def served(
        accuracy: dict[str, dict[str, float]] | None,
        provider: str = "cpu",
        plans: dict[str, Any] | None = None,
    ) -> str:
        root = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
        shutil.copytree(model_root / "1", root / "1")
        spec = load_spec(with_int8(root, accuracy, plans), "sentiment", None, "auto", provider)
        assert spec.onnx_path.name == {"fp32": "model.onnx", "int8": "model.int8.onnx"}[spec.variant]
        return spec.variant

    close = {
        "movie (test split)": {"texts": 1275, "fp32": 0.831, "int8": 0.835},
        "tweets (test split)": {"texts": 1636, "fp32": 0.8973, "int8": 0.8967},
        # 89 texts: one text is 1.1 points, the least a change can show
        "patient reviews (test split)": {"texts": 89, "fp32": 0.6517, "int8": 0.6404},
    }
    assert served(close) == "int8"
    assert served(close, "cuda") == "fp32"  # the quantised operators are the CPU's
    assert served(None) == "fp32"  # an older build measured nothing by kind: fp32, as before
    worse = close | {"tweets (test split)": {"texts": 1636, "fp32": 0.8973, "int8": 0.8900}}
    assert served(worse) == "fp32"  # 0.7 points lost on the tweets
    two_texts = close | {"patient reviews (test split)": {"texts": 89, "fp32": 0.6517, "int8": 0.6292}}
    assert served(two_texts) == "fp32"

    # a build that judged its plans on dev decides by that verdict; its test figures only report
    def plans(*excess: float) -> dict[str, Any]:
        tried = [{"plan": f"plan {i}", "excess": e} for i, e in enumerate(excess)]
        kept = next((t for t in tried if t["excess"] <= 0), min(tried, key=lambda t: t["excess"]))
        return {"plan": kept["plan"], "plans_tried": tried}

    assert served(worse, plans=plans(-0.002)) == "int8"  # held on dev: 0.7 points on a test split reports
    assert served(worse, plans=plans(0.004, -0.001)) == "int8"  # the second plan held
    assert served(close, plans=plans(0.004, 0.002)) == "fp32"  # none held: the closest was written
    assert served(close, "cuda", plans=plans(-0.002)) == "fp32"
    # without an int8 graph at all, auto is fp32 and an explicit int8 is refused with the reason
    assert load_spec(model_root, "sentiment", None, "auto").variant == "fp32"
    with pytest.raises(ModelDirectoryError, match="lacks model.int8.onnx"):
        load_spec(model_root, "sentiment", None, "int8")
