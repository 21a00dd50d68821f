"""The hand-written attention and encoder: each piece against its definition."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from model_export.config import MINILM, ModelConfig, Pooling, with_pooling
from model_export.model import SentimentTransformer, attention, sinusoidal_table

CONFIG = ModelConfig(vocab_size=50, d_model=16, n_heads=4, n_layers=2, d_ff=32, max_len=64, dropout=0.0)


@pytest.fixture
def model() -> SentimentTransformer:
    torch.manual_seed(0)
    return SentimentTransformer(CONFIG).eval()


def test_attention_rows_sum_to_one_and_padded_keys_get_exactly_zero() -> None:
    torch.manual_seed(1)
    q, k, v = (torch.randn(2, 3, 5, 4) for _ in range(3))
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])[:, None, None, :]
    out, weights = attention(q, k, v, mask)
    assert out.shape == (2, 3, 5, 4)
    assert weights.shape == (2, 3, 5, 5)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 5))
    assert torch.all(weights[1, :, :, 2:] == 0.0)
    assert torch.all(weights[1, :, :, :2] > 0.0)


def test_attention_is_softmax_of_scaled_scores() -> None:
    torch.manual_seed(2)
    q, k, v = (torch.randn(1, 1, 3, 8) for _ in range(3))
    _, weights = attention(q, k, v, torch.ones(1, 1, 1, 3))
    expected = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(8), dim=-1)
    torch.testing.assert_close(weights, expected)


def test_fully_masked_row_is_not_nan() -> None:
    q, k, v = (torch.randn(1, 1, 2, 4) for _ in range(3))
    out, weights = attention(q, k, v, torch.zeros(1, 1, 1, 2))
    assert not torch.isnan(out).any() and not torch.isnan(weights).any()


def test_positional_encoding_matches_formula() -> None:
    table = sinusoidal_table(50, 16)
    for pos in (0, 1, 7, 49):
        for i in range(8):
            angle = pos / (10000 ** (2 * i / 16))
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-5)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-5)


def test_forward_shapes(model: SentimentTransformer) -> None:
    ids = torch.tensor([[2, 5, 6, 3], [2, 7, 3, 0]])
    logits, attentions = model(ids, (ids != 0).long())
    assert logits.shape == (2, 2)
    assert attentions.shape == (2, CONFIG.n_layers, CONFIG.n_heads, 4, 4)


@pytest.mark.parametrize("pooling", list(Pooling))
def test_padding_does_not_change_a_sentence(pooling: Pooling) -> None:
    torch.manual_seed(0)
    model = SentimentTransformer(dataclasses.replace(CONFIG, pooling=pooling, pooler=True)).eval()
    short = [2, 9, 10, 3]
    alone_logits, alone_att = model(torch.tensor([short]), torch.ones(1, 4, dtype=torch.long))
    batch = torch.tensor([short + [0] * 5, [2, 11, 12, 13, 14, 15, 16, 17, 3]])
    logits, attentions = model(batch, (batch != 0).long())
    torch.testing.assert_close(logits[0], alone_logits[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(attentions[0, :, :, :4, :4], alone_att[0], atol=1e-6, rtol=0)
    assert torch.all(attentions[0, :, :, :, 4:] == 0.0)


def test_d_model_must_split_into_heads() -> None:
    with pytest.raises(ValueError, match="not divisible"):
        ModelConfig(d_model=10, n_heads=4)


def test_mean_pooling_averages_the_real_tokens_only() -> None:
    torch.manual_seed(0)
    model = SentimentTransformer(dataclasses.replace(CONFIG, pooling=Pooling.MEAN)).eval()
    ids = torch.tensor([[2, 9, 10, 3, 0, 0]])
    mask = (ids != 0).long()
    hidden, _ = model.encode(ids, mask)
    expected = model.classifier(hidden[0, :4].mean(dim=0))
    logits, _ = model(ids, mask)
    torch.testing.assert_close(logits[0], expected, atol=1e-6, rtol=0)


def test_mean_pooling_of_the_pretrained_encoder_goes_without_the_cls_pooler() -> None:
    mean = with_pooling(MINILM, Pooling.MEAN)
    assert mean.pooling is Pooling.MEAN and mean.pooler is False
    assert with_pooling(MINILM, None) is MINILM and with_pooling(MINILM, Pooling.CLS).pooler is True
