"""Attention made visible: the words and weights every rendering shows, the terminal's colours, the
PNG, and the HTML page with every head's heatmap as a small inline PNG."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sentiment_client import _render
from sentiment_client.types import Attention, BatchInfo, Prediction

# [CLS] and [SEP] take most of the rollout, as they do in the real model
TOKENS = ("[CLS]", "an", "un", "##believ", "##able", "film", "!", "[SEP]")
ROLLOUT = (0.40, 0.05, 0.06, 0.04, 0.10, 0.15, 0.02, 0.18)


def _prediction(
    layers: int,
    heads: int,
    n: int,
    seed: int = 0,
    tokens: tuple[str, ...] | None = None,
    rollout: tuple[float, ...] | None = None,
    label: str = "positive",
) -> Prediction:
    rng = np.random.default_rng(seed)
    weights = rng.random((layers, heads, n, n)) ** 4  # peaked rows, like real attention
    weights /= weights.sum(axis=-1, keepdims=True)
    tokens = tokens or ("[CLS]", *(f"w{i}" for i in range(n - 2)), "[SEP]")
    rollout = rollout or (1 / n,) * n
    flat = tuple(float(v) for v in weights.ravel())
    attention = Attention(tokens, (1 / n,) * n, rollout, layers, heads, flat)
    return Prediction(
        text="a text",
        label=label,
        score=0.9,
        probabilities={"negative": 0.1, "positive": 0.9}
        if label == "positive"
        else {"negative": 0.9, "positive": 0.1},
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


def test_shown_words_merge_pieces_and_leave_out_the_special_tokens() -> None:
    words = _render.shown_words(TOKENS, ROLLOUT)
    assert [w.text for w in words] == ["an", "unbelievable", "film", "!"]
    # a word gets what its pieces got together, renormalised over the words shown
    inner = sum(ROLLOUT[1:-1])
    assert [w.weight for w in words] == pytest.approx(
        [0.05 / inner, 0.20 / inner, 0.15 / inner, 0.02 / inner]
    )
    assert not any(w.special for w in words)


def test_shown_words_keep_the_special_tokens_on_request() -> None:
    words = _render.shown_words(TOKENS, ROLLOUT, special_tokens=True)
    assert [(w.text, w.special) for w in words] == [
        ("[CLS]", True),
        ("an", False),
        ("unbelievable", False),
        ("film", False),
        ("!", False),
        ("[SEP]", True),
    ]
    assert [w.weight for w in words] == pytest.approx([0.40, 0.05, 0.20, 0.15, 0.02, 0.18])


def test_shown_words_of_a_text_with_no_word_keep_what_there_is() -> None:
    words = _render.shown_words(("[CLS]", "[SEP]"), (0.3, 0.1))
    assert [(w.text, w.weight) for w in words] == [
        ("[CLS]", pytest.approx(0.75)),
        ("[SEP]", pytest.approx(0.25)),
    ]


def _backgrounds(text: object) -> dict[str, tuple[int, ...]]:
    """Each word of a rich Text with its background colour."""
    from rich.text import Text

    assert isinstance(text, Text)
    colours = {}
    for span in text.spans:
        match = re.search(r"on rgb\((\d+),(\d+),(\d+)\)", str(span.style))
        assert match
        colours[text.plain[span.start : span.end].strip()] = tuple(int(c) for c in match.groups())
    return colours


@pytest.mark.parametrize("label", ["positive", "negative"])
def test_terminal_colours_the_words_by_weight(label: str) -> None:
    prediction = _prediction(0, 0, len(TOKENS), tokens=TOKENS, rollout=ROLLOUT, label=label)
    colours = _backgrounds(_render.terminal_text(prediction))
    assert list(colours) == ["an", "unbelievable", "film", "!"]
    # the heaviest word gets the strongest colour, and the colours keep the weights' order
    assert colours["unbelievable"] == ((255, 40, 40) if label == "negative" else (40, 255, 40))
    faded = {word: min(rgb) for word, rgb in colours.items()}
    assert faded["unbelievable"] < faded["film"] < faded["an"] < faded["!"]


def test_terminal_shows_the_special_tokens_on_request_without_fading_the_words() -> None:
    prediction = _prediction(0, 0, len(TOKENS), tokens=TOKENS, rollout=ROLLOUT)
    colours = _backgrounds(_render.terminal_text(prediction, special_tokens=True))
    assert list(colours) == ["[CLS]", "an", "unbelievable", "film", "!", "[SEP]"]
    # [CLS] outweighs every word and saturates, yet the heaviest word keeps the strongest colour
    assert colours["unbelievable"] == colours["[CLS]"] == (40, 255, 40)
    assert min(colours["unbelievable"]) < min(colours["[SEP]"]) < min(colours["film"])


def _html_words(page: str) -> list[tuple[str, float]]:
    return [
        (word, float(weight))
        for weight, word in re.findall(r'<span class="tok"[^>]*title="([^"]+)">([^<]*)<', page)
    ]


def test_html_page_shows_the_same_words_and_weights() -> None:
    prediction = _prediction(1, 1, len(TOKENS), tokens=TOKENS, rollout=ROLLOUT)
    for special_tokens in (False, True):
        page = _render.html_page(prediction, special_tokens)
        rollout_row = page.split("<h2>", 2)[1]
        expected = _render.shown_words(TOKENS, ROLLOUT, special_tokens)
        assert _html_words(rollout_row) == [(w.text, pytest.approx(w.weight, abs=1e-4)) for w in expected]
        assert ("[CLS]" in dict(_html_words(page))) is special_tokens


def _strong_pixels(path: Path, rgb: tuple[int, int, int]) -> int:
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
    return int((np.abs(pixels - np.array(rgb)).max(axis=-1) <= 12).sum())


@pytest.mark.parametrize("label", ["positive", "negative"])
def test_png_summary_draws_the_words_in_their_colours(label: str, tmp_path: Path) -> None:
    short, long = tmp_path / "short.png", tmp_path / "long.png"
    _render.png_figure(_prediction(0, 0, len(TOKENS), tokens=TOKENS, rollout=ROLLOUT, label=label), short)
    with Image.open(short) as image:
        assert image.format == "PNG"
        width, height = image.size
    assert 800 <= width <= 1200 and 120 <= height <= 600
    green, red = (40, 255, 40), (255, 40, 40)
    strongest, other = (red, green) if label == "negative" else (green, red)
    # the heaviest word's box and the colour bar's end: a few thousand pixels, none of the other label's
    assert _strong_pixels(short, strongest) > 1000
    assert _strong_pixels(short, other) == 0
    # a long text wraps over more lines: as wide, taller
    n = 120
    _render.png_figure(_prediction(0, 0, n, label=label), long)
    with Image.open(long) as image:
        assert image.size[0] == width and image.size[1] > height + 100


def test_png_keeps_a_heatmap_per_layer_and_head_under_the_summary(tmp_path: Path) -> None:
    summary, full = tmp_path / "summary.png", tmp_path / "full.png"
    _render.png_figure(_prediction(0, 0, len(TOKENS), tokens=TOKENS, rollout=ROLLOUT), summary)
    _render.png_figure(
        _prediction(2, 4, len(TOKENS), tokens=TOKENS, rollout=ROLLOUT), full, special_tokens=True
    )
    with Image.open(summary) as small, Image.open(full) as large:
        assert large.size[0] == small.size[0] and large.size[1] > small.size[1] + 2 * 200
