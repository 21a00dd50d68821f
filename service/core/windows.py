"""Long texts read whole: a text longer than the model's window (max_length tokens) is cut into
overlapping windows, each read as a text of its own ([CLS] piece [SEP]) in the same batches as the
others, and its answer is the softmax of the mean of its windows' logits.

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
    from service.core.fair_queue import ItemResult
    from service.core.results import RowResult


def combine(served: Sequence[ItemResult]) -> ItemResult:
    """One text's result from its windows' results (Preprocessor.windows cuts them): the softmax of
    their mean logits; its time queued and computing, the longest of theirs (its answer waits for
    its last window); the first window's batch."""
    rows: list[RowResult] = [item.value for item in served]
    logits = np.mean([row.logits for row in rows if row.logits is not None], axis=0).astype(np.float32)
    first = served[0]
    return dataclasses.replace(
        first,
        value=dataclasses.replace(rows[0], probabilities=softmax(logits[np.newaxis])[0], logits=logits),
        queue_seconds=max(item.queue_seconds for item in served),
        compute_seconds=max(item.compute_seconds for item in served),
        padded_length=max(item.padded_length for item in served),
    )
