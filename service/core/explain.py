"""Word contributions: which words moved the answer, and how far, measured on the model itself.

Attention says where the model looked, not why it answered as it did. A contribution is measured by
taking words away: a variant of the text without some of its words is read by the same model, and
the change in the probability of the predicted label is what those words were worth. A variant is
the text's token ids with the word's tokens deleted; the variants ride in the batches as texts of
their own (so an explanation is admitted and scheduled as the work it is), and the padding mask
makes a variant padded in a batch read exactly as it would alone.

Two methods, each signed (a word can push towards the label or away from it):

- SHAPLEY (the default): sampled Shapley values. Words are added one at a time, from none to all,
  in a random order and in its reverse; each word is credited with the change its arrival made,
  averaged over the two orders. The contributions add up exactly to the label's probability for
  the whole text less its probability for no words at all (the baseline), and a word's worth
  counts the company it keeps: "not" beside "good". About 2n variants of half the text's length
  on average, about what occlusion costs.
- OCCLUSION: each word left out once (n variants); cheaper to reason about, blind to words that
  stand in for each other ("great, just great").

The order is drawn from a generator seeded by the text's tokens, so the same text gets the same
numbers through every door. `python -m model_export faithfulness` measures both against attention.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

PERMUTATIONS = 2  # one random order and its reverse: the faithfulness figures rest on this


class Method(StrEnum):
    NONE = "none"
    SHAPLEY = "shapley"
    OCCLUSION = "occlusion"


DEFAULT = Method.SHAPLEY


@dataclass(frozen=True)
class Word:
    """A word as a person sees it: its characters in the text, and the model's tokens that read it
    (positions in the text's ids, [CLS] at 0)."""

    text: str
    start: int
    stop: int
    tokens: tuple[int, ...]


@dataclass(frozen=True)
class Explanation:
    """Each word's contribution to the probability of the predicted label (label_index): positive
    when the word pushed towards it. baseline: that probability with no word at all; with SHAPLEY
    the contributions sum to the text's probability less the baseline. passes: the variants read."""

    method: Method
    label_index: int
    words: list[Word]
    contributions: NDArray[np.float32]
    baseline: float
    passes: int


@dataclass(frozen=True)
class Plan:
    """What to run for one text: sequences[0] is the text, sequences[1] no word; then the method's
    variants; orders: the word orders of SHAPLEY (their prefixes of 1 to n-1 words, in turn)."""

    method: Method
    words: list[Word]
    sequences: list[list[int]]
    orders: list[NDArray[np.int64]]


def without(ids: Sequence[int], words: Sequence[Word], dropped: Sequence[int]) -> list[int]:
    """The text's ids with the tokens of the words at `dropped` deleted ([CLS] and [SEP] stay)."""
    gone = {token for index in dropped for token in words[index].tokens}
    return [token_id for position, token_id in enumerate(ids) if position not in gone]


def _generator(ids: Sequence[int]) -> np.random.Generator:
    digest = hashlib.blake2b(np.asarray(ids, np.int64).tobytes(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


def passes_for(method: Method, words: int) -> int:
    """Sequences the model reads to explain a text of `words` words (the text itself included)."""
    if method is Method.NONE:
        return 1
    if method is Method.OCCLUSION:
        return 2 + words
    return 2 + PERMUTATIONS * max(0, words - 1)


def plan(ids: Sequence[int], words: list[Word], method: Method) -> Plan:
    """The sequences that explain a text (its ids as the model reads them, and its words)."""
    n = len(words)
    sequences = [list(ids), without(ids, words, range(n))]
    orders: list[NDArray[np.int64]] = []
    if method is Method.OCCLUSION:
        sequences += [without(ids, words, [index]) for index in range(n)]
    elif method is Method.SHAPLEY:
        first = _generator(ids).permutation(n)
        for order in [first, first[::-1]][:PERMUTATIONS]:
            orders.append(order)
            for size in range(1, n):
                sequences.append(without(ids, words, order[size:].tolist()))
    assert len(sequences) == passes_for(method, n)
    return Plan(method, words, sequences, orders)


def explanation(plan: Plan, probabilities: NDArray[np.float32], label: int | None = None) -> Explanation:
    """The words' contributions from the probabilities of the plan's sequences, (len(sequences), labels):
    towards `label`, by default the one the text's own row predicts."""
    label = int(probabilities[0].argmax()) if label is None else label
    p = probabilities[:, label].astype(np.float64)
    n = len(plan.words)
    if plan.method is Method.OCCLUSION:
        values = p[0] - p[2:]
    else:
        values = np.zeros(n, np.float64)
        prefixes = 2
        for order in plan.orders:  # probability after 0, 1, ..., n words in this order
            path = np.concatenate([[p[1]], p[prefixes : prefixes + n - 1], [p[0]]])
            values[order] += np.diff(path)
            prefixes += n - 1
        values /= max(1, len(plan.orders))
    return Explanation(
        plan.method, label, plan.words, values.astype(np.float32), float(p[1]), len(plan.sequences)
    )
