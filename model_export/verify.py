"""Checks run after every export: ONNX Runtime agrees with PyTorch, and padding changes nothing."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from model_contract import OUTPUTS, Outputs, graph_mismatch, pad, padding_runs, sha256_mismatch
from model_export.classifier import session
from model_export.tokenizer import encode, load_tokenizer

PROBE_TEXTS = (
    "Great.",
    "A quietly devastating film, and one of the best of the year.",
    "Not worth the ticket.",
    "The plot wanders, the jokes land rarely, and by the third act even the actors look bored "
    "with a story that never decides what it wants to be about.",
    "I loved it!",
)
# limits on logits are relative to the largest logit (at least 1): float32 rounding grows with the
# values, and calibration may scale the logits up
TORCH_TOLERANCE = 1e-4
PADDING_TOLERANCE = 1e-5


class VerificationError(RuntimeError):
    """The exported model breaks the contract; the message says which check and by how much."""


def check_contract(sess: ort.InferenceSession) -> None:
    broken = graph_mismatch(sess)
    if broken is not None:
        raise VerificationError(f"the graph breaks the model contract: {broken}")


def verify(
    model_dir: Path, torch_model: nn.Module | None = None, texts: Sequence[str] = PROBE_TEXTS
) -> dict[str, Any]:
    """Run every check on a model directory; returns the measured differences, raises on failure."""
    config = json.loads((model_dir / "config.json").read_text())
    onnx_path = model_dir / "model.onnx"
    corrupt = sha256_mismatch(onnx_path, config["sha256"]["model.onnx"])
    if corrupt is not None:
        raise VerificationError(corrupt)
    sess = session(onnx_path)  # every graph optimisation on
    check_contract(sess)
    tokenizer = load_tokenizer(model_dir / "tokenizer.json", config["max_length"])
    ids = encode(tokenizer, texts)
    input_ids, mask = pad(ids)

    def run(batch_ids: np.ndarray, batch_mask: np.ndarray) -> Outputs:
        logits, attentions = sess.run(list(OUTPUTS), {"input_ids": batch_ids, "attention_mask": batch_mask})
        return logits, attentions

    (logits, attentions), alone = padding_runs(run, ids)
    assert attentions is not None
    report: dict[str, Any] = {"probe_texts": len(texts), "padded_length": int(input_ids.shape[1])}
    layers, heads = attentions.shape[1:3]
    if logits.shape != (len(texts), len(config["labels"])):
        raise VerificationError(f"logits have shape {logits.shape}")
    if attentions.shape != (len(texts), layers, heads, input_ids.shape[1], input_ids.shape[1]):
        raise VerificationError(f"attentions have shape {attentions.shape}")
    scale = max(1.0, float(np.abs(logits).max()))
    report["logit_scale"] = scale
    if torch_model is not None:
        torch_model.eval()
        with torch.no_grad():
            expected, _ = torch_model(torch.from_numpy(input_ids), torch.from_numpy(mask))
        diff = float(np.abs(expected.numpy() - logits).max())
        report["max_logit_diff_vs_pytorch"] = diff
        if diff > TORCH_TOLERANCE * scale:
            raise VerificationError(
                f"ONNX Runtime and PyTorch logits differ by {diff:.2e} "
                f"(limit {TORCH_TOLERANCE:.0e} x the largest logit, {scale:.1f})"
            )
    worst_logit = worst_attention = 0.0
    for row, (seq, (alone_logits, alone_att)) in enumerate(zip(ids, alone, strict=True)):
        assert alone_att is not None
        n = len(seq)
        worst_logit = max(worst_logit, float(np.abs(alone_logits - logits[row]).max()))
        worst_attention = max(worst_attention, float(np.abs(alone_att - attentions[row, :, :, :n, :n]).max()))
        padded_keys = attentions[row, :, :, :n, n:]
        if padded_keys.size and float(np.abs(padded_keys).max()) != 0.0:
            raise VerificationError(f"text {row}: padded keys get attention weight above 0")
    report["max_logit_diff_alone_vs_padded"] = worst_logit
    report["max_attention_diff_alone_vs_padded"] = worst_attention
    if worst_logit > PADDING_TOLERANCE * scale or worst_attention > PADDING_TOLERANCE:
        raise VerificationError(
            f"padding changes results: logits by {worst_logit:.2e}, attention by "
            f"{worst_attention:.2e} (limit {PADDING_TOLERANCE:.0e}, for logits x the largest, {scale:.1f})"
        )
    return report
