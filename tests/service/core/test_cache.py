"""The answer cache: bounded, least recently used out first, full attention and long texts never
kept, every lookup counted."""

from __future__ import annotations

import numpy as np

from service.core.cache import MAX_TEXT_CHARS, AnswerCache
from service.core.preprocess import Encoded
from service.core.results import AttentionMode, RowResult


class Counts:
    def __init__(self) -> None:
        self.hits = self.misses = 0

    def cache_lookups(self, hits: int, misses: int) -> None:
        self.hits += hits
        self.misses += misses


def row(p: float) -> RowResult:
    return RowResult(np.array([1 - p, p], dtype=np.float32))


def put(cache: AnswerCache, text: str, mode: AttentionMode = AttentionMode.NONE) -> None:
    cache.put(text, mode, Encoded([101, 7, 102], ["[CLS]", text, "[SEP]"], False), row(0.9))


def test_the_least_recently_used_answer_goes_first_and_every_lookup_counts() -> None:
    counts = Counts()
    cache = AnswerCache(2, counts)
    put(cache, "a")
    put(cache, "b")
    assert cache.get(["a"], AttentionMode.NONE)[0] is not None  # "a" is now the most recent
    put(cache, "c")  # so "b" goes
    found = cache.get(["a", "b", "c", "a"], AttentionMode.NONE)
    assert [answer is not None for answer in found] == [True, False, True, True]
    assert len(cache) == 2
    assert (counts.hits, counts.misses) == (4, 1)


def test_an_answer_is_kept_for_the_attention_it_was_asked_with() -> None:
    cache = AnswerCache(8)
    put(cache, "a", AttentionMode.NONE)
    assert cache.get(["a"], AttentionMode.SUMMARY) == [None]
    put(cache, "a", AttentionMode.SUMMARY)
    assert cache.get(["a"], AttentionMode.SUMMARY)[0] is not None


def test_full_attention_and_long_texts_are_not_kept() -> None:
    cache = AnswerCache(8)
    put(cache, "a", AttentionMode.FULL)
    put(cache, "x" * (MAX_TEXT_CHARS + 1))
    put(cache, "y" * MAX_TEXT_CHARS)
    assert len(cache) == 1
    assert cache.get(["y" * MAX_TEXT_CHARS], AttentionMode.NONE)[0] is not None
