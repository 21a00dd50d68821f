"""The batch's work in the worker thread: the model, softmax, and each row's attention as asked."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from service.core.attention import cls_attention, rollout
from service.core.results import AttentionMode, RowResult, softmax

if TYPE_CHECKING:
    from service.core.batcher import RunFn
    from service.core.runtime import OnnxModel


def make_run_fn(model: OnnxModel) -> RunFn:
    """The batcher's run function over `model`: probabilities for every row, and per row only the
    attention that row's caller asked for, cropped to its real tokens (a caller who has gone gets
    none). Attention work is skipped for the whole batch when no caller asked for it."""

    def run(
        input_ids: NDArray[np.int64],
        attention_mask: NDArray[np.int64],
        modes: Sequence[AttentionMode | None],
        wide: bool,
    ) -> list[RowResult]:
        with_attention = any(m in (AttentionMode.SUMMARY, AttentionMode.FULL) for m in modes)
        logits, attentions = model.run(input_ids, attention_mask, with_attention, wide)
        probabilities = softmax(logits)
        lengths = attention_mask.sum(axis=1)
        rows = []
        for row, mode in enumerate(modes):
            if attentions is None or mode is None or mode is AttentionMode.NONE:
                rows.append(RowResult(probabilities[row], logits=logits[row]))
                continue
            n = int(lengths[row])
            weights = attentions[row, :, :, :n, :n]
            rows.append(
                RowResult(
                    probabilities[row],
                    cls_attention(weights),
                    rollout(weights),
                    np.array(weights, dtype=np.float32) if mode is AttentionMode.FULL else None,
                    logits[row],
                )
            )
        return rows

    return run
