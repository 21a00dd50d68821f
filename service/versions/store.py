"""Finds the model version to serve and checks its directory against the contract."""

from __future__ import annotations

import json
from pathlib import Path

from model_contract import sha256_mismatch, versions
from service.core.engine import ModelSpec
from service.core.errors import ModelDirectoryError

REQUIRED = ("config.json", "tokenizer.json")
ONNX_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}  # by variant (config.Variant)
MAX_ONNX_BYTES = 2**31  # a model.onnx is one protobuf message, which cannot be larger


def no_versions(root: Path) -> ModelDirectoryError:
    """The error for a model root that holds no version."""
    return ModelDirectoryError(
        f"{root} holds no model versions (expected {root}/1/model.onnx ...); "
        "build one with `python -m model_export build`"
    )


def load_spec(root: Path, name: str, version: int | None, variant: str = "fp32") -> ModelSpec:
    """Pick `version` (or the highest) under `root` and check its `variant`'s graph; raises
    ModelDirectoryError."""
    onnx_file = ONNX_FILES[variant]
    available = versions(root)
    if not available:
        raise no_versions(root)
    chosen = available[-1] if version is None else version
    if chosen not in available:
        raise ModelDirectoryError(f"{root} has no version {chosen}; it has {available}")
    path = root / str(chosen)
    for required in (*REQUIRED, onnx_file):
        if not (path / required).is_file():
            raise ModelDirectoryError(f"{path} lacks {required}")
    try:
        config = json.loads((path / "config.json").read_text())
        expected = config["sha256"][onnx_file]
        labels = tuple(str(label) for label in config["labels"])
        model = config["model"]
        spec = ModelSpec(
            name=name,
            version=chosen,
            path=path,
            onnx_path=path / onnx_file,
            labels=labels,
            max_length=int(config["max_length"]),
            num_layers=int(model["n_layers"]),
            num_heads=int(model["n_heads"]),
            hidden_size=int(model["d_model"]),
            vocab_size=int(model["vocab_size"]),
            metrics=dict(config.get("metrics", {})),
            available_versions=tuple(available),
        )
    except (ValueError, KeyError, TypeError) as err:
        raise ModelDirectoryError(f"{path}/config.json is not a valid model config: {err!r}") from err
    if len(labels) < 2:
        raise ModelDirectoryError(f"{path}/config.json lists {len(labels)} labels; at least 2 needed")
    size = spec.onnx_path.stat().st_size
    if size > MAX_ONNX_BYTES:  # refused before hours of hashing a file no session could read
        raise ModelDirectoryError(
            f"{spec.onnx_path} is {size / 2**30:.1f} GiB; an ONNX file holds at most 2 GiB (a protobuf "
            "message's limit)"
        )
    corrupt = sha256_mismatch(spec.onnx_path, expected)
    if corrupt is not None:
        raise ModelDirectoryError(corrupt)
    return spec
