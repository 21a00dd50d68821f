"""Attention and word contributions made visible: coloured words in the terminal, a PNG, a
self-contained HTML page."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from sentiment_client.types import Attention, Explanation, Prediction


class ShownWord(NamedTuple):
    """A word as the terminal, the PNG and the HTML page show it."""

    text: str
    weight: float  # its share of the weight over the shown words: they sum to 1
    special: bool  # [CLS] or [SEP]


def shown_words(
    tokens: Sequence[str], values: Sequence[float], special_tokens: bool = False
) -> list[ShownWord]:
    """The text's words with their weights, written once for every rendering.

    A WordPiece continuation ("##able") joins the word before it and adds its weight to it: a word
    receives what its pieces received together. [CLS] (first) and [SEP] (last) are left out unless
    `special_tokens`, since they soak up most of the attention and wash out the words; a text with
    no word of its own keeps them. The weights are renormalised over the words shown."""
    n = len(tokens)
    words: list[ShownWord] = []
    for index, (token, value) in enumerate(zip(tokens, values, strict=True)):
        special = index in (0, n - 1)
        if special and not special_tokens and n > 2:
            continue
        if token.startswith("##") and len(token) > 2 and words and not words[-1].special:
            words[-1] = ShownWord(words[-1].text + token[2:], words[-1].weight + value, False)
        else:
            words.append(ShownWord(token, value, special))
    total = sum(word.weight for word in words) or 1.0
    return [word._replace(weight=word.weight / total) for word in words]


def _scale(words: Sequence[ShownWord]) -> float:
    """The weight that gets the strongest colour: the largest word's, so that a shown [CLS] or
    [SEP] saturates rather than fading the words."""
    plain = [word.weight for word in words if not word.special] or [word.weight for word in words]
    return max(plain, default=0.0) or 1.0


def _strengths(words: Sequence[ShownWord]) -> list[float]:
    """How strongly to colour each word, from 0 to 1."""
    top = _scale(words)
    return [min(1.0, word.weight / top) for word in words]


def _rgb(strength: float, label: str) -> tuple[int, int, int]:
    """White for no weight to full red (negative) or green (positive) for the strongest."""
    level = round(255 - 215 * strength)
    return (255, level, level) if label == "negative" else (level, 255, level)


def _css(strength: float, label: str) -> str:
    return "rgb({},{},{})".format(*_rgb(strength, label))


def _unit_rgb(strength: float, label: str) -> tuple[float, ...]:
    """The same colour as matplotlib takes it."""
    return tuple(channel / 255 for channel in _rgb(strength, label))


def terminal_text(prediction: Prediction, special_tokens: bool = False) -> object:
    """A rich Text: each word on a background as strong as the rollout weight it received; the
    words alone unless `special_tokens`."""
    from rich.text import Text

    if prediction.attention is None:
        raise ValueError("the prediction carries no attention: ask for attention='summary' or 'full'")
    words = shown_words(prediction.attention.tokens, prediction.attention.rollout, special_tokens)
    text = Text()
    for word, strength in zip(words, _strengths(words), strict=True):
        text.append(f" {word.text} ", style=f"black on {_css(strength, prediction.label)}")
    return text


def _away(label: str) -> str:
    """The colour's label for a push away from `label`: the other of negative and positive."""
    return "positive" if label == "negative" else "negative"


def contribution_text(prediction: Prediction) -> object:
    """A rich Text: each word on a background of the label it pushed towards (green positive, red
    negative), as strong as its contribution against the largest; the words as written."""
    from rich.text import Text

    why = prediction.explanation
    if why is None:
        raise ValueError("the prediction carries no explanation: ask for explain='shapley' or 'occlusion'")
    text = Text()
    for word, colour in zip(why.words, _contribution_colours(why), strict=True):
        text.append(f" {word.text} ", style=f"black on {colour}")
    return text


def _contribution_colours(why: Explanation) -> list[str]:
    """Each word's colour: the label it pushed towards (green positive, red negative), as strong as
    its contribution against the largest."""
    top = max((abs(w.contribution) for w in why.words), default=0.0) or 1.0
    return [
        _css(min(1.0, abs(w.contribution) / top), why.label if w.contribution >= 0 else _away(why.label))
        for w in why.words
    ]


def strongest_words(prediction: Prediction, count: int = 5) -> str:
    """The words that moved the answer most, signed towards the predicted label: "rude +0.21, ..."."""
    why = prediction.explanation
    if why is None:
        return ""
    ranked = sorted(why.words, key=lambda w: -abs(w.contribution))[:count]
    return ", ".join(f"{w.text} {w.contribution:+.2f}" for w in ranked)


def _heatmap_png(attention: Attention, layer: int, head: int, label: str) -> str:
    """One head's weights as a base64 PNG of one pixel per (query, key), each row scaled to its
    largest weight, in 32 shades of the page's word colour (a palette image, one byte a pixel):
    about 1 KB where a table of styled cells took tens of kilobytes."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    n = len(attention.tokens)
    start = (layer * attention.num_heads + head) * n * n
    matrix = np.asarray(attention.weights[start : start + n * n], dtype=np.float64).reshape(n, n)
    top = matrix.max(axis=1, keepdims=True)
    shade = np.rint(31 * matrix / np.where(top > 0, top, 1.0)).astype(np.uint8)
    image = Image.fromarray(shade, mode="P")
    image.putpalette([channel for step in range(32) for channel in _rgb(step / 31, label)])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _contribution_row(prediction: Prediction) -> str:
    """The words coloured by what they did to the answer, for the HTML page ("" without an explanation)."""
    why = prediction.explanation
    if why is None:
        return ""
    cells = "".join(
        f'<span class="tok" style="background:{colour}" title="{w.contribution:+.4f}">'
        f"{html.escape(w.text)}</span>"
        for w, colour in zip(why.words, _contribution_colours(why), strict=True)
    )
    return (
        f"<h2>What moved the answer ({html.escape(why.method)}: green towards positive, red towards "
        f"negative)</h2><p>{cells}</p><p>Measured on the model, by reading the text without its words: "
        "the faithful explanation. Attention, below, shows where the model looked.</p>"
    )


def html_page(prediction: Prediction, special_tokens: bool = False) -> str:
    """One HTML file with no external resources and no script: the words coloured by what they did
    to the answer (when the prediction carries an explanation), by rollout and by [CLS] attention
    (the words alone unless `special_tokens`), and a heatmap per layer and head (an inline PNG,
    token labels on both axes) when full attention was asked for."""
    attention = prediction.attention
    assert attention is not None
    label = prediction.label
    rows = [_contribution_row(prediction)]
    for name, values in (
        ("rollout", attention.rollout),
        ("[CLS] attention, last layer", attention.cls_attention),
    ):
        words = shown_words(attention.tokens, values, special_tokens)
        cells = "".join(
            f'<span class="tok" style="background:{_css(strength, label)}" title="{word.weight:.4f}">'
            f"{html.escape(word.text)}</span>"
            for word, strength in zip(words, _strengths(words), strict=True)
        )
        rows.append(f"<h2>{html.escape(name)}</h2><p>{cells}</p>")
    maps = []
    n = len(attention.tokens)
    queries = "".join(f"<span>{html.escape(t)}</span>" for t in attention.tokens)
    keys = "".join(f"<span>{html.escape(t)}</span>" for t in attention.tokens)
    for layer in range(attention.num_layers):
        for head in range(attention.num_heads):
            image = _heatmap_png(attention, layer, head, label)
            maps.append(
                f"<figure><figcaption>layer {layer + 1}, head {head + 1}</figcaption>"
                f'<div class="map" style="--n:{n}"><div></div><div class="keys">{keys}</div>'
                f'<div class="queries">{queries}</div>'
                f'<img alt="layer {layer + 1}, head {head + 1}: which token (row) attends to which (column)" '
                f'src="data:image/png;base64,{image}"></div></figure>'
            )
    grid = f'<h2>Every layer and head</h2><div class="grid">{"".join(maps)}</div>' if maps else ""
    probabilities = ", ".join(f"{k} {v:.3f}" for k, v in prediction.probabilities.items())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Attention: {html.escape(label)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; background: #fff; color: #222; }}
.tok {{ display: inline-block; padding: 0.2em 0.35em; margin: 0.1em; border-radius: 0.25em; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 1em; }}
.map {{ display: grid; grid-template-columns: auto calc(var(--n) * 1.1em); font-size: 0.7em; }}
.map img {{ width: calc(var(--n) * 1.1em); height: calc(var(--n) * 1.1em); image-rendering: pixelated; }}
.keys {{ display: flex; }}
.keys span {{ width: 1.1em; writing-mode: vertical-rl; transform: rotate(180deg); white-space: nowrap; }}
.queries {{ display: flex; flex-direction: column; text-align: right; padding-right: 0.3em; }}
.queries span {{ height: 1.1em; line-height: 1.1em; white-space: nowrap; }}
</style></head><body>
<h1>{html.escape(label)} <small>({probabilities})</small></h1>
<p>{html.escape(prediction.text)}</p>
{"".join(rows)}
{grid}
</body></html>
"""


def png_figure(prediction: Prediction, path: Path, special_tokens: bool = False) -> None:
    """The words as running text, each on a background as strong as its rollout weight (the words
    alone unless `special_tokens`), under the label and score, with a colour bar; and, with full
    attention, a heatmap per layer and head below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LinearSegmentedColormap, Normalize
    from matplotlib.font_manager import FontProperties

    attention: Attention | None = prediction.attention
    assert attention is not None
    label = prediction.label
    words = shown_words(attention.tokens, attention.rollout, special_tokens)
    layers, heads = attention.num_layers, attention.num_heads
    dpi, font_pt = 110, 13.0
    font = FontProperties(size=font_pt)
    width_in, margin_in = max(8.0, 1.6 * max(heads, 4)), 0.4
    line_in, pad_in, gap_in = width_in - 2 * margin_in, 0.3 * font_pt / 72, 0.12
    fig = plt.figure(figsize=(width_in, 1.0), dpi=dpi)  # its height is known once the words are wrapped

    # wrap the words like running text, measuring each as it will be drawn (sizes in inches)
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    placed: list[tuple[str, int, float]] = []  # text, line, left edge of its box
    line, x = 0, 0.0
    for word in words:
        text = word.text if len(word.text) <= 40 else word.text[:39] + "…"
        box = renderer.get_text_width_height_descent(text, font, ismath=False)[0] / dpi + 2 * pad_in
        if x > 0 and x + box > line_in:
            line, x = line + 1, 0.0
        placed.append((text, line, x))
        x += box + gap_in
    row_in = 2.2 * font_pt / 72
    words_in, title_in, bar_in = (line + 1) * row_in, 0.6, 0.75
    maps_in = 2.2 * layers + 0.2 if layers else 0.0
    height_in = title_in + words_in + bar_in + maps_in
    fig.set_size_inches(width_in, height_in)

    if layers:  # laid out first: tight_layout would not place the free axes added after
        grid = fig.add_gridspec(layers, max(heads, 1))
        n = len(attention.tokens)
        every = max(1, -(-n // 40))
        ticks = list(range(0, n, every))
        labels = [attention.tokens[i] for i in ticks]
        size = max(2, min(7, int(720 / (len(ticks) * max(heads, 4)))))  # smaller panels, smaller labels
        for layer in range(layers):
            for head in range(heads):
                axis = fig.add_subplot(grid[layer, head])
                matrix = [[attention.weight(layer, head, q, k) for k in range(n)] for q in range(n)]
                axis.imshow(matrix, cmap="viridis", vmin=0.0)
                # which token looks at which: keys along the bottom, queries down the side
                axis.set_xticks(ticks, labels, rotation=90, fontsize=size)
                axis.set_yticks(ticks, labels, fontsize=size)
                axis.set_title(f"L{layer + 1} H{head + 1}", fontsize=7)
        grid.tight_layout(fig, rect=(0.0, 0.0, 1.0, maps_in / height_in))

    # the words: an axis in inches from the top-left corner of the text block
    text_axis = fig.add_axes(
        (margin_in / width_in, (maps_in + bar_in) / height_in, line_in / width_in, words_in / height_in)
    )
    text_axis.set_xlim(0.0, line_in)
    text_axis.set_ylim(words_in, 0.0)
    text_axis.set_axis_off()
    for (text, row, left), strength in zip(placed, _strengths(words), strict=True):
        text_axis.text(
            left + pad_in, (row + 0.5) * row_in, text, fontproperties=font, va="center", ha="left",
            parse_math=False, bbox={"boxstyle": "round,pad=0.3", "facecolor": _unit_rgb(strength, label),
                                    "edgecolor": "none"},
        )  # fmt: skip
    shown = "words and special tokens" if special_tokens else "words"
    text_axis.set_title(
        f"{label} ({prediction.score:.3f}): attention rollout over the {shown}",
        loc="left", fontsize=13, pad=16, parse_math=False,
    )  # fmt: skip

    # the colour bar: white for no weight up to the strongest word's share
    colours = LinearSegmentedColormap.from_list("rollout", [_unit_rgb(0.0, label), _unit_rgb(1.0, label)])
    bar_axis = fig.add_axes(
        (margin_in / width_in, (maps_in + 0.4) / height_in, 0.4 * line_in / width_in, 0.14 / height_in)
    )
    saturated = any(word.weight > _scale(words) for word in words)
    bar = fig.colorbar(
        ScalarMappable(Normalize(0.0, _scale(words)), colours), cax=bar_axis, orientation="horizontal",
        extend="max" if saturated else "neither",
    )  # fmt: skip
    bar.ax.tick_params(labelsize=8)
    bar.ax.text(1.1, 0.5, f"share of rollout over the shown {shown}", transform=bar.ax.transAxes,
                va="center", fontsize=9)  # fmt: skip
    fig.savefig(path)
    plt.close(fig)
