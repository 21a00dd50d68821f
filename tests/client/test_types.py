"""The client's result types."""

from __future__ import annotations

import pytest

from sentiment_client import Attention


def test_words_drop_the_special_tokens_and_renormalise() -> None:
    attention = Attention(
        tokens=("[CLS]", "great", "film", "[SEP]"),
        cls_attention=(0.4, 0.1, 0.1, 0.4),
        rollout=(0.5, 0.3, 0.1, 0.1),
    )
    tokens, rollout = attention.words()
    assert tokens == ("great", "film")
    assert rollout == pytest.approx((0.75, 0.25))
    # a text with no word of its own keeps what there is
    bare = Attention(tokens=("[CLS]", "[SEP]"), cls_attention=(0.5, 0.5), rollout=(0.6, 0.4))
    assert bare.words() == (("[CLS]", "[SEP]"), (0.6, 0.4))
