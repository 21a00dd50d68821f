"""Long texts read whole: a text longer than the model's window (max_length tokens) is cut into
overlapping windows, each read as a text of its own ([CLS] piece [SEP]) in the same batches as the
others, and its answer is the softmax of the mean of its windows' logits. Its attention summary is
its windows' placed at the tokens they read, averaged where windows overlap and scaled to sum to 1
again; full attention (every layer's token-by-token weights) is not given for it.

Windows are as wide as the model reads (max_length less [CLS] and [SEP]) and overlap by a quarter,
so every token is read with at least a quarter of a window of context on the side the cut falls;
the last window ends at the text's end. The mean of the logits (not of the probabilities) keeps a
window that is sure of itself from being averaged away by neutral ones less than a vote would, and
needs no threshold; bench figures and the model card say how it compares with truncation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from service.core.results import softmax

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from service.core.fair_queue import ItemResult
    from service.core.preprocess import Windows
    from service.core.results import RowResult


def placed(values: Sequence[NDArray[np.float32]], windows: Windows) -> NDArray[np.float32]:
    """Per-token weights of each window ([CLS] piece [SEP]) as one row over the whole text's tokens:
    each at the tokens it read, averaged where windows overlap, scaled to sum to 1."""
    total = np.zeros(len(windows.whole.ids), np.float64)
    count = np.zeros(len(windows.whole.ids), np.float64)
    last = len(total) - 1
    for row, begin in zip(values, windows.begins, strict=True):
        span = slice(1 + begin, 1 + begin + len(row) - 2)
        total[span] += row[1:-1]
        count[span] += 1
        total[[0, last]] += row[[0, -1]]  # [CLS] and [SEP]: every window has its own
        count[[0, last]] += 1
    mean = total / np.maximum(count, 1)
    scaled: NDArray[np.float32] = (mean / mean.sum()).astype(np.float32)
    return scaled


def combine(served: Sequence[ItemResult], windows: Windows) -> ItemResult:
    """One text's result from its windows' results (Preprocessor.windows cuts them): the softmax of
    their mean logits, and their attention summary placed on the whole text's tokens when they
    carry one; its time queued and computing, the longest of theirs (its answer waits for its last
    window); the first window's batch."""
    rows: list[RowResult] = [item.value for item in served]
    logits = np.mean([row.logits for row in rows if row.logits is not None], axis=0).astype(np.float32)
    first = served[0]
    row = dataclasses.replace(rows[0], probabilities=softmax(logits[np.newaxis])[0], logits=logits)
    if all(r.cls_attention is not None and r.rollout is not None for r in rows):
        cls = placed([r.cls_attention for r in rows if r.cls_attention is not None], windows)
        rollout = placed([r.rollout for r in rows if r.rollout is not None], windows)
        row = dataclasses.replace(row, cls_attention=cls, rollout=rollout, weights=None)
    return dataclasses.replace(
        first,
        value=row,
        queue_seconds=max(item.queue_seconds for item in served),
        compute_seconds=max(item.compute_seconds for item in served),
        padded_length=max(item.padded_length for item in served),
    )
