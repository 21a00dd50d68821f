"""Attention summaries: [CLS] row of the last layer and rollout."""

from __future__ import annotations

import numpy as np
import pytest

from service.core.attention import cls_attention, rollout


def random_attention(layers: int, heads: int, length: int, seed: int = 0) -> np.ndarray:
    raw = np.random.default_rng(seed).random((layers, heads, length, length)).astype(np.float32)
    return raw / raw.sum(-1, keepdims=True)


def test_cls_attention_is_last_layer_head_mean_of_row_zero() -> None:
    attentions = random_attention(2, 3, 5)
    np.testing.assert_allclose(cls_attention(attentions), attentions[-1, :, 0, :].mean(0), rtol=1e-6)
    assert cls_attention(attentions).sum() == pytest.approx(1.0, abs=1e-5)


def test_rollout_of_one_layer_mixes_in_the_residual() -> None:
    attentions = random_attention(1, 2, 4)
    expected = 0.5 * attentions[0].mean(0)[0] + 0.5 * np.eye(4)[0]
    np.testing.assert_allclose(rollout(attentions), expected / expected.sum(), rtol=1e-5)


def test_rollout_multiplies_layers_and_sums_to_one() -> None:
    attentions = random_attention(3, 2, 6, seed=4)
    mixed = [0.5 * layer.mean(0) + 0.5 * np.eye(6) for layer in attentions.astype(np.float64)]
    joint = mixed[2] @ mixed[1] @ mixed[0]
    np.testing.assert_allclose(rollout(attentions), joint[0] / joint[0].sum(), rtol=1e-5)
    assert rollout(attentions).sum() == pytest.approx(1.0, abs=1e-6)
