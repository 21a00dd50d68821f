"""Typed results of the sentiment client."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class AttentionMode(StrEnum):
    """What attention to ask for with each prediction."""

    NONE = "none"
    SUMMARY = "summary"  # tokens, [CLS] attention of the last layer, rollout across layers
    FULL = "full"  # the summary and every layer's and head's token-by-token weights


class Explain(StrEnum):
    """Which explanation of the answer to ask for: how much each word moved it."""

    NONE = "none"
    SHAPLEY = "shapley"  # sampled Shapley values: the faithful one (the model card measures it)
    OCCLUSION = "occlusion"  # each word left out once


class Priority(StrEnum):
    """How soon a client's texts want their turn on a busy server: interactive callers ask for high,
    bulk jobs for low (a flood of low requests then costs the high ones little)."""

    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"


@dataclass(frozen=True)
class BatchInfo:
    """What the server did for one text: its queue time, the batch's compute time and shape."""

    queue_seconds: float
    compute_seconds: float
    batch_size: int
    padded_length: int


@dataclass(frozen=True)
class Attention:
    """Attention over the text's real tokens ([CLS] first, [SEP] last)."""

    tokens: tuple[str, ...]
    cls_attention: tuple[float, ...]
    rollout: tuple[float, ...]
    num_layers: int = 0
    num_heads: int = 0
    weights: tuple[float, ...] = ()  # FULL only: row-major [layers, heads, tokens, tokens]

    def weight(self, layer: int, head: int, query: int, key: int) -> float:
        """One entry of the full weights (FULL mode only)."""
        n = len(self.tokens)
        return self.weights[((layer * self.num_heads + head) * n + query) * n + key]

    def words(self) -> tuple[tuple[str, ...], tuple[float, ...]]:
        """The text's own tokens without [CLS] and [SEP], with their rollout renormalised to sum to
        1: the special tokens soak up most of the attention and wash out the words."""
        tokens, rollout = self.tokens[1:-1], self.rollout[1:-1]
        if not tokens:
            return self.tokens, self.rollout
        total = sum(rollout) or 1.0
        return tokens, tuple(v / total for v in rollout)


@dataclass(frozen=True)
class WordContribution:
    """One word as written (text[start:end]) and how far it moved the probability of the predicted
    label: positive towards it, negative away from it."""

    text: str
    contribution: float
    start: int
    end: int


@dataclass(frozen=True)
class Explanation:
    """Which words moved the answer (`label`, the predicted one), measured on the model by reading the
    text without some of them. baseline: the label's probability with no word; with shapley the
    contributions sum to the prediction's score less it."""

    method: str
    label: str
    words: tuple[WordContribution, ...]
    baseline: float
    passes: int  # sequences the model read to measure it

    def towards(self, label: str, labels: Sequence[str]) -> tuple[float, ...]:
        """Each word's contribution towards `label` (one of the model's two `labels`): the other
        label's contributions change sign."""
        if label == self.label:
            return tuple(w.contribution for w in self.words)
        if len(labels) != 2 or label not in labels:
            raise ValueError(
                f"contributions towards {label!r} are known for the predicted label of a two-label model"
            )
        return tuple(-w.contribution for w in self.words)


@dataclass(frozen=True)
class Prediction:
    """The model's answer for one text."""

    text: str
    label: str
    score: float
    probabilities: dict[str, float]
    truncated: bool
    num_tokens: int
    batch: BatchInfo
    attention: Attention | None = None
    windows: int = 1  # the overlapping windows a long text was read in (read_whole=True)
    explanation: Explanation | None = None  # which words moved the answer (explain=...)


@dataclass(frozen=True)
class ModelInfo:
    """The model a server serves, and its request limits."""

    name: str
    version: int
    labels: tuple[str, ...]
    max_length: int
    num_layers: int
    num_heads: int
    hidden_size: int
    vocab_size: int
    metrics: dict[str, object]
    available_versions: tuple[int, ...]
    max_texts_per_request: int
    max_text_chars: int
    execution_provider: str
    loaded_versions: tuple[int, ...] = ()  # versions calls may name
    default_version: int = 0  # the version answering calls that name none
    shadow_versions: tuple[int, ...] = ()  # loaded to be compared with the default, answering nothing
    max_explained_words: int = 0  # most words one request may have explained


@dataclass(frozen=True)
class ModelVersion:
    """One version under the server's model directory, as its repository index lists it."""

    name: str
    version: int
    state: str  # READY (loaded) or UNAVAILABLE
    reason: str  # "default", "shadow", why it was refused, or that the version policy left it out
