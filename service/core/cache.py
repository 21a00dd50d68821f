"""Answers to texts seen before, kept per model version: retweets, templated messages and health
checks repeat, and a repeat is answered without tokenizing or running the model.

Each engine (one model version) has its own cache, so a new version never answers from an old
version's entries, and the cache goes with its version. An entry is keyed by the text and the
attention asked for; full attention (layers x heads x tokens^2 floats) and texts over
MAX_TEXT_CHARS are not kept, so memory stays bounded by the entry count.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from service.core.results import AttentionMode

if TYPE_CHECKING:
    from service.core.preprocess import Encoded
    from service.core.results import RowResult

MAX_TEXT_CHARS = 2000  # tweets, reviews' first lines, templates: what repeats is short


class CacheObserver(Protocol):
    """Counts what the cache answered (ops/metrics.py)."""

    def cache_lookups(self, hits: int, misses: int) -> None: ...


@dataclass(frozen=True)
class Answer:
    """What a text was answered, to answer it again: how it was read, and its row."""

    encoded: Encoded
    row: RowResult


class AnswerCache:
    """The `entries` most recently used answers of one version (least recently used go first)."""

    def __init__(self, entries: int, observer: CacheObserver | None = None) -> None:
        self.entries = entries
        self._observer = observer
        self._answers: OrderedDict[tuple[str, AttentionMode], Answer] = OrderedDict()

    def __len__(self) -> int:
        return len(self._answers)

    @staticmethod
    def keeps(text: str, mode: AttentionMode) -> bool:
        return mode is not AttentionMode.FULL and len(text) <= MAX_TEXT_CHARS

    def get(self, texts: list[str], mode: AttentionMode) -> list[Answer | None]:
        """Each text's answer when one is kept, else None; counted as hits and misses."""
        answers = self._answers
        found: list[Answer | None] = []
        for text in texts:
            answer = answers.get((text, mode))
            if answer is not None:
                answers.move_to_end((text, mode))
            found.append(answer)
        if self._observer is not None:
            hits = sum(answer is not None for answer in found)
            self._observer.cache_lookups(hits, len(found) - hits)
        return found

    def put(self, text: str, mode: AttentionMode, encoded: Encoded, row: RowResult) -> None:
        if not self.keeps(text, mode):
            return
        self._answers[(text, mode)] = Answer(encoded, row)
        self._answers.move_to_end((text, mode))
        while len(self._answers) > self.entries:
            self._answers.popitem(last=False)


def runs_once(texts: Sequence[str], kept: Sequence[Answer | None]) -> tuple[list[int], list[int]]:
    """Which texts run when each distinct text runs once and kept answers run not at all: for each
    text its place among those run (-1: kept), and the texts run by their place in the request."""
    run_of: list[int] = []
    to_run: list[int] = []
    first: dict[str, int] = {}
    for position, (text, answer) in enumerate(zip(texts, kept, strict=True)):
        if answer is not None:
            run_of.append(-1)
            continue
        index = first.get(text)
        if index is None:
            index = first[text] = len(to_run)
            to_run.append(position)
        run_of.append(index)
    return run_of, to_run
