"""What an engine is: its model directory's spec, how it uses the machine, and what the APIs say of
it (data only: the version store makes specs without loading an engine)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ModelSpec:
    """What the engine knows of its model directory (versions/store.py checks it against the
    contract)."""

    name: str
    version: int
    path: Path
    onnx_path: Path
    labels: tuple[str, ...]
    max_length: int
    num_layers: int
    num_heads: int
    hidden_size: int
    vocab_size: int
    metrics: dict[str, Any]
    available_versions: tuple[int, ...]  # every version under the model root
    variant: str = "fp32"  # the graph onnx_path holds: fp32 (model.onnx) or int8 (model.int8.onnx)


@dataclass(frozen=True)
class Sizing:
    """How the server uses the machine, as chosen at start (flags, or sized from the CPUs)."""

    workers: int
    max_concurrent_batches: int
    intra_op_threads: int
    lone_batch_threads: int
    available_cpus: int


@dataclass(frozen=True)
class EngineInfo:
    """What the APIs say about the model and the server: the model directory's spec, the runtime's
    provider, the request limits and how the machine is used."""

    spec: ModelSpec
    provider: str
    max_texts: int
    max_chars: int
    sizing: Sizing
    max_explained_words: int = 0  # most words one request may have explained
