"""What the engine answers for each text: the result types the worker thread, the engine and the
API boundaries share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from service.core.explain import Explanation
    from service.core.fair_queue import ItemResult
    from service.core.preprocess import Encoded


def softmax(logits: NDArray[np.float32]) -> NDArray[np.float32]:
    """Row-wise softmax of (B, labels) logits."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    result: NDArray[np.float32] = (shifted / shifted.sum(axis=-1, keepdims=True)).astype(np.float32)
    return result


class AttentionMode(StrEnum):
    NONE = "none"
    SUMMARY = "summary"  # tokens, [CLS] attention of the last layer, rollout
    FULL = "full"  # the summary and every layer's and head's weights


@dataclass(frozen=True)
class AttentionView:
    tokens: list[str]
    cls_attention: NDArray[np.float32]
    rollout: NDArray[np.float32]
    weights: NDArray[np.float32] | None  # (layers, heads, T, T) in FULL mode


@dataclass(frozen=True)
class RowResult:
    """What the worker thread makes of one text's row: probabilities, and attention when asked."""

    probabilities: NDArray[np.float32]
    cls_attention: NDArray[np.float32] | None = None
    rollout: NDArray[np.float32] | None = None
    weights: NDArray[np.float32] | None = None  # its own small array, cropped: never a view of the batch
    logits: NDArray[np.float32] | None = None  # before softmax (the calibrated graph's output)


@dataclass(frozen=True)
class TextResult:
    label: str
    score: float
    probabilities: NDArray[np.float32]
    truncated: bool
    num_tokens: int
    served: ItemResult
    attention: AttentionView | None
    unknown_tokens: int = (
        0  # tokens the vocabulary did not know ([UNK]), [CLS] and [SEP] included in num_tokens
    )
    logits: NDArray[np.float32] | None = None
    windows: int = 1  # the overlapping windows a long text was read in (core/windows.py)
    explanation: Explanation | None = None  # the words' contributions, when asked (core/explain.py)


def text_result(labels: Sequence[str], encoded: Encoded, served: ItemResult) -> TextResult:
    """One text's answer from its tokens and the row its batch gave it: the label of the highest
    probability, and the attention view when the row holds attention (every path answers this way:
    the server's engine and the bulk predictor)."""
    row: RowResult = served.value
    probabilities = row.probabilities
    best = int(probabilities.argmax())
    view = None
    if row.cls_attention is not None and row.rollout is not None:
        view = AttentionView(encoded.tokens, row.cls_attention, row.rollout, row.weights)
    return TextResult(
        labels[best],
        float(probabilities[best]),
        probabilities,
        encoded.truncated,
        len(encoded.ids),
        served,
        view,
        encoded.unknown,
        row.logits,
    )


class PredictionObserver(Protocol):
    """Watches the model's answers (service/ops/metrics.py: model monitoring; service/ops/access.py)."""

    def predicted(self, texts: Sequence[str], results: Sequence[TextResult], version: int) -> None: ...


class PredictionObservers:
    """Several observers as one, called in order."""

    def __init__(self, *observers: PredictionObserver) -> None:
        self.observers = observers

    def predicted(self, texts: Sequence[str], results: Sequence[TextResult], version: int) -> None:
        for observer in self.observers:
            observer.predicted(texts, results, version)
