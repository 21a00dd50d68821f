"""The HTML attention page: every head's heatmap as a small inline PNG, weights kept in order."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
from PIL import Image

from sentiment_client import _render
from sentiment_client.types import Attention, BatchInfo, Prediction


def _prediction(layers: int, heads: int, n: int, seed: int = 0) -> Prediction:
    rng = np.random.default_rng(seed)
    weights = rng.random((layers, heads, n, n)) ** 4  # peaked rows, like real attention
    weights /= weights.sum(axis=-1, keepdims=True)
    tokens = ("[CLS]", *(f"w{i}" for i in range(n - 2)), "[SEP]")
    flat = tuple(float(v) for v in weights.ravel())
    attention = Attention(tokens, (1 / n,) * n, (1 / n,) * n, layers, heads, flat)
    return Prediction(
        text="a text",
        label="positive",
        score=0.9,
        probabilities={"negative": 0.1, "positive": 0.9},
        truncated=False,
        num_tokens=n,
        batch=BatchInfo(0.0, 0.0, 1, n),
        attention=attention,
    )


def test_every_head_is_an_inline_png_of_its_weights() -> None:
    prediction = _prediction(layers=2, heads=3, n=9)
    page = _render.html_page(prediction)
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 2 * 3
    attention = prediction.attention
    assert attention is not None
    for index, data in enumerate(images):
        shades = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))
        assert shades.shape == (9, 9)
        layer, head = divmod(index, 3)
        matrix = np.array([[attention.weight(layer, head, q, k) for k in range(9)] for q in range(9)])
        # each row's strongest key gets the strongest shade, and the shades keep the weights' order
        assert (shades[np.arange(9), matrix.argmax(axis=1)] == 31).all()
        assert np.abs(shades / 31 - matrix / matrix.max(axis=1, keepdims=True)).max() <= 0.5 / 31 + 1e-9
    assert "<script" not in page and "http" not in page.replace("http-equiv", "")


def test_full_attention_page_of_the_default_model_size_stays_small() -> None:
    # 6 layers x 12 heads, 40 tokens: a styled table cell per weight made this about 8 MB
    page = _render.html_page(_prediction(layers=6, heads=12, n=40))
    assert page.count("<figure>") == 72
    assert len(page.encode()) < 400_000
