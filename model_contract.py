"""The model directory contract, in one place: the exporter writes it, the server and the bench read it.

    models/sentiment/<version>/   integer versions; the highest is served by default
      model.onnx                  INPUTS -> OUTPUTS below; config.json records its sha256

Light on purpose (numpy and onnxruntime only; no torch, no grpc), so that the server can import it
without the exporter and the exporter without the server.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

INPUTS = {"input_ids": "tensor(int64)", "attention_mask": "tensor(int64)"}  # both [batch, seq]
OUTPUTS = {"logits": "tensor(float)", "attentions": "tensor(float)"}  # [batch, labels], [b, l, h, s, s]
PAD_ID = 0  # [PAD]; the mask is 1 on real tokens, 0 on padding


MAX_VERSION = 2**63 - 1  # versions are int64 in every API


def version_number(text: str) -> int | None:
    """The version `text` names, or None: a whole number from 1 to MAX_VERSION written as such, in
    ASCII digits ("²".isdigit() is true), without leading zeros ("0001" is not version 1) and never
    0, which means "the default" in calls."""
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or text[0] == "0":
        return None
    number = int(text)
    return number if number <= MAX_VERSION else None


def version_of(value: object) -> int | None:
    """The version `value` names, as text (version_number) or as a whole number (JSON, protobuf's
    int64), or None."""
    if isinstance(value, str):
        return version_number(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_VERSION:
        return value
    return None


def versions(root: Path) -> list[int]:
    """Version directories under `root` (named by version_number), ascending; other names are not
    versions."""
    if not root.is_dir():
        return []
    found = ((p, version_number(p.name)) for p in root.iterdir())
    return sorted(number for p, number in found if number is not None and p.is_dir())


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def session_options(threads: int, spin: bool = False) -> ort.SessionOptions:
    """Every graph optimisation on, `threads` intra-op threads, one inter-op thread, and no
    spin-waiting unless `spin` (spinning threads steal the CPU that other batches and the event loop
    need; a session whose batches run alone may spin)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    if spin:  # spin while a run works, not after it: the threads sleep as soon as run() returns
        options.add_session_config_entry("session.force_spinning_stop", "1")
    return options


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Row indices in batches of `batch_size`, sorted by length so that little of a batch is padding:
    how every offline run of a model over many texts is cut (the exporter's checks and reports, the
    teacher)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def pad(sequences: Sequence[Sequence[int]]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Right-pad token ids with PAD_ID to the longest: (input_ids, attention_mask), int64."""
    length = max(len(s) for s in sequences)
    ids = np.full((len(sequences), length), PAD_ID, dtype=np.int64)
    mask = np.zeros((len(sequences), length), dtype=np.int64)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask


def graph_mismatch(session: ort.InferenceSession) -> str | None:
    """How a graph breaks the contract (its inputs and outputs by name and type, attentions of rank 5),
    or None when it keeps it."""
    inputs = {i.name: i.type for i in session.get_inputs()}
    outputs = {o.name: o.type for o in session.get_outputs()}
    if inputs != INPUTS or outputs != OUTPUTS:
        return f"inputs {inputs} (want {INPUTS}), outputs {outputs} (want {OUTPUTS})"
    attentions = next(o for o in session.get_outputs() if o.name == "attentions")
    if len(attentions.shape) != 5:
        return f"attentions have {len(attentions.shape)} axes; [batch, layers, heads, seq, seq] has 5"
    return None


def sha256_mismatch(onnx_path: Path, expected: str) -> str | None:
    """How a graph file differs from the one config.json names by its sha256, or None."""
    actual = sha256_file(onnx_path)
    if actual == expected:
        return None
    return (
        f"{onnx_path} has sha256 {actual} but config.json expects {expected}: the file is corrupt or was "
        "replaced"
    )


Outputs = tuple[NDArray[np.float32], NDArray[np.float32] | None]  # logits, and attentions when asked


def padding_runs(
    run: Callable[[NDArray[np.int64], NDArray[np.int64]], Outputs], sequences: Sequence[Sequence[int]]
) -> tuple[Outputs, list[Outputs]]:
    """The graph's outputs (run(input_ids, attention_mask)) for `sequences` padded together in one
    batch, and for each alone (its row, without the batch axis). The mask's contract is that they
    agree; the exporter and the server each judge by their own measure and tolerance."""
    ids, mask = pad(sequences)
    together = run(ids, mask)
    alone: list[Outputs] = []
    for sequence in sequences:
        logits, attentions = run(*pad([sequence]))
        alone.append((logits[0], None if attentions is None else attentions[0]))
    return together, alone
