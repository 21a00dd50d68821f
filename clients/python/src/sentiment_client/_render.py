"""Attention made visible: coloured tokens in the terminal, a PNG heatmap, a self-contained HTML page."""

from __future__ import annotations

import html
from pathlib import Path

from sentiment_client.types import Attention, Prediction


def _scaled(values: tuple[float, ...]) -> list[float]:
    """Weights scaled to [0, 1] by the largest, ignoring [CLS] and [SEP] which soak up attention."""
    inner = values[1:-1] or values
    top = max(inner) or 1.0
    return [min(1.0, v / top) for v in values]


def terminal_text(prediction: Prediction, special_tokens: bool = False) -> object:
    """A rich Text: each token on a background as strong as the rollout weight it received; the
    words alone (renormalised) unless `special_tokens`."""
    from rich.text import Text

    if prediction.attention is None:
        raise ValueError("the prediction carries no attention: ask for attention='summary' or 'full'")
    attention = prediction.attention
    if special_tokens:
        tokens, weights = attention.tokens, _scaled(attention.rollout)
    else:
        tokens, rollout = attention.words()
        top = max(rollout) or 1.0
        weights = [v / top for v in rollout]
    text = Text()
    for token, weight in zip(tokens, weights, strict=True):
        level = int(255 - 200 * weight)
        colour = (
            f"rgb(255,{level},{level})" if prediction.label == "negative" else f"rgb({level},255,{level})"
        )
        text.append(f" {token} ", style=f"black on {colour}")
    return text


def _cell(weight: float, label: str) -> str:
    level = int(255 - 215 * weight)
    colour = f"rgb(255,{level},{level})" if label == "negative" else f"rgb({level},{255},{level})"
    return f"background:{colour}"


def _heatmap_png(attention: Attention, layer: int, head: int, label: str) -> str:
    """One head's weights as a base64 PNG of one pixel per (query, key), each row scaled to its
    largest weight, in 32 shades of the page's token colour (a palette image, one byte a pixel):
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
    palette = []
    for step in range(32):
        level = round(255 - 215 * step / 31)
        palette += [255, level, level] if label == "negative" else [level, 255, level]
    image.putpalette(palette)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def html_page(prediction: Prediction) -> str:
    """One HTML file with no external resources and no script: tokens coloured by rollout and
    [CLS] attention, and a heatmap per layer and head (an inline PNG, token labels on both axes)
    when full attention was asked for."""
    attention = prediction.attention
    assert attention is not None
    label = prediction.label
    rows = []
    for name, values in (
        ("rollout", attention.rollout),
        ("[CLS] attention, last layer", attention.cls_attention),
    ):
        cells = "".join(
            f'<span class="tok" style="{_cell(w, label)}" title="{v:.4f}">{html.escape(t)}</span>'
            for t, w, v in zip(attention.tokens, _scaled(values), values, strict=True)
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


def png_figure(prediction: Prediction, path: Path) -> None:
    """Summary bars (rollout, [CLS] attention) and, with full attention, a heatmap per layer and head."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attention: Attention | None = prediction.attention
    assert attention is not None
    n = len(attention.tokens)
    layers, heads = attention.num_layers, attention.num_heads
    rows = 1 + layers
    fig = plt.figure(figsize=(max(8, 1.6 * max(heads, 4)), 3 + 2.2 * layers), dpi=110)
    grid = fig.add_gridspec(rows, max(heads, 1), height_ratios=[1.3] + [1] * layers)
    summary = fig.add_subplot(grid[0, :])
    positions = range(n)
    summary.bar([p - 0.2 for p in positions], attention.rollout, width=0.4, label="rollout")
    summary.bar(
        [p + 0.2 for p in positions], attention.cls_attention, width=0.4, label="[CLS] attention, last layer"
    )
    summary.set_xticks(list(positions), attention.tokens, rotation=60, ha="right", fontsize=8)
    summary.set_title(f"{prediction.label} ({prediction.score:.3f}): {prediction.text[:80]}")
    summary.legend(fontsize=8)
    for layer in range(layers):
        for head in range(heads):
            axis = fig.add_subplot(grid[1 + layer, head])
            matrix = [[attention.weight(layer, head, q, k) for k in range(n)] for q in range(n)]
            axis.imshow(matrix, cmap="viridis", vmin=0.0)
            # which word looks at which: keys along the bottom, queries down the side
            every = max(1, -(-n // 40))
            ticks = list(range(0, n, every))
            labels = [attention.tokens[i] for i in ticks]
            size = max(2, min(7, int(720 / (len(ticks) * max(heads, 4)))))  # smaller panels, smaller labels
            axis.set_xticks(ticks, labels, rotation=90, fontsize=size)
            axis.set_yticks(ticks, labels, fontsize=size)
            axis.set_title(f"L{layer + 1} H{head + 1}", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
