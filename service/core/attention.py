"""What the caller sees of attention: the [CLS] row of the last layer, and rollout across layers."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float32]


def cls_attention(attentions: FloatArray) -> FloatArray:
    """Weight [CLS] (query 0) gives each token in the last layer, averaged over heads: (T,).

    attentions: (layers, heads, T, T), already cropped to the real tokens.
    """
    row: FloatArray = attentions[-1, :, 0, :].mean(axis=0)
    return row


def rollout(attentions: FloatArray) -> FloatArray:
    """Attention rollout (Abnar & Zuidema 2020) from [CLS] to each token: (T,), sums to 1.

    Each layer's head-averaged attention is mixed with the identity for the residual path,
    rows renormalised, and the layers multiplied from the first to the last.
    """
    length = attentions.shape[-1]
    identity = np.eye(length, dtype=np.float64)
    joint = identity
    for layer in attentions.astype(np.float64):
        mixed = 0.5 * layer.mean(axis=0) + 0.5 * identity
        mixed /= mixed.sum(axis=-1, keepdims=True)
        joint = mixed @ joint
    row = joint[0]
    result: FloatArray = (row / row.sum()).astype(np.float32)
    return result
