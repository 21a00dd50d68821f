"""Finds the model version to serve and checks its directory against the contract."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from model_contract import sha256_mismatch, versions
from service.core.errors import ModelDirectoryError
from service.core.spec import ModelSpec

log = logging.getLogger(__name__)

REQUIRED = ("config.json", "tokenizer.json")
ONNX_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}  # by variant (config.Variant)
# --variant auto, for a build that recorded no dev verdict (before plans were judged on dev): int8
# only where it costs at most this much accuracy on every text kind the build measured both graphs on
# (or one text, on a kind too small to tell half a point)
INT8_MAX_LOSS = 0.005
MAX_ONNX_BYTES = 2**31  # a model.onnx is one protobuf message, which cannot be larger


def no_versions(root: Path) -> ModelDirectoryError:
    """The error for a model root that holds no version."""
    return ModelDirectoryError(
        f"{root} holds no model versions (expected {root}/1/model.onnx ...); "
        "build one with `python -m model_export build`"
    )


def dev_verdict(quantized: dict[str, Any]) -> tuple[bool, str] | None:
    """Whether the build's int8 plan held on the dev splits (model_export.quantize.choose: excess ≤ 0
    keeps it), and the plan's name; None for a build that recorded no plans."""
    plan = quantized.get("plan")
    chosen = [tried for tried in quantized.get("plans_tried") or () if tried.get("plan") == plan]
    if not chosen:
        return None
    return float(chosen[0]["excess"]) <= 1e-9, str(plan)


def int8_losses(figures: dict[str, Any]) -> tuple[float, str, str]:
    """The most int8 loses against fp32 on one kind of text the build measured, that kind, and the
    first kind where it loses more than INT8_MAX_LOSS (or one text), "" where none does."""
    worst, kind_of_worst, beyond = 0.0, "", ""
    for kind, scores in figures.items():
        loss = float(scores["fp32"]) - float(scores["int8"])
        allowed = max(INT8_MAX_LOSS, 1 / max(1, int(scores["texts"])))
        if loss > allowed + 1e-4 and not beyond:  # the report rounds accuracy to four places
            beyond = kind
        if loss > worst:
            worst, kind_of_worst = loss, kind
    return worst, kind_of_worst, beyond


def auto_variant(path: Path, config: dict[str, Any], provider: str) -> tuple[str, str]:
    """The graph --variant auto serves from the version at `path`, and why. On the CPU: int8 where the
    build's quantisation plan held on the dev splits (the test splits only report, so that their
    figures stay an honest estimate); for an older build without that verdict, int8 where the test
    figures (config.json's quantized.accuracy) lose at most INT8_MAX_LOSS on every kind; fp32
    otherwise. On a GPU always fp32: the quantised graph's operators run on the CPU there."""
    if provider != "cpu":
        return "fp32", f"the int8 graph is for the CPU, and {provider} was asked for"
    if not (path / ONNX_FILES["int8"]).is_file():
        return "fp32", "the version has no int8 graph"
    quantized = config.get("quantized") or {}
    figures = quantized.get("accuracy") or {}
    worst, kind_of_worst, beyond = int8_losses(figures)
    reported = (
        (
            f"; on the test splits it loses at most {100 * worst:.1f} points ({kind_of_worst})"
            if worst > 0
            else "; on the test splits it loses nothing"
        )
        if figures
        else ""
    )
    verdict = dev_verdict(quantized)
    if verdict is not None:
        held, plan = verdict
        if not held:
            return "fp32", f"no int8 plan stayed within the build's tolerance on the dev splits{reported}"
        return "int8", f"its int8 plan ({plan}) stayed within the build's tolerance on dev{reported}"
    if not figures:
        return "fp32", "its config.json holds no int8 accuracy by kind of text (rebuild it to have one)"
    if beyond:
        loss = float(figures[beyond]["fp32"]) - float(figures[beyond]["int8"])
        return "fp32", f"int8 loses {100 * loss:.1f} points of accuracy on {beyond}"
    lost = f"{100 * worst:.1f} points on {kind_of_worst}" if worst > 0 else "nothing"
    return "int8", f"int8 loses at most {lost} of the {len(figures)} kinds of text the build measured"


def load_spec(
    root: Path, name: str, version: int | None, variant: str = "fp32", provider: str = "cpu"
) -> ModelSpec:
    """Pick `version` (or the highest) under `root` and check its `variant`'s graph (auto: the one
    auto_variant chooses); raises ModelDirectoryError."""
    available = versions(root)
    if not available:
        raise no_versions(root)
    chosen = available[-1] if version is None else version
    if chosen not in available:
        raise ModelDirectoryError(f"{root} has no version {chosen}; it has {available}")
    path = root / str(chosen)
    for required in REQUIRED:
        if not (path / required).is_file():
            raise ModelDirectoryError(f"{path} lacks {required}")
    try:
        config = json.loads((path / "config.json").read_text())
        if variant == "auto":
            variant, why = auto_variant(path, config, provider)
            log.info("version %d serves its %s graph (--variant auto): %s", chosen, variant, why)
        onnx_file = ONNX_FILES[variant]
        if not (path / onnx_file).is_file():
            raise ModelDirectoryError(f"{path} lacks {onnx_file}")
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
            variant=variant,
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
