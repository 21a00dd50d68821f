"""Finding and checking the model directory before anything is served."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

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
