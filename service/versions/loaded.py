"""A loaded version: its engine, the metrics of its batches, and the calls holding it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.core.engine import Engine
    from service.core.fair_queue import Priority
    from service.ops.metrics import Metrics


class VersionObserver:
    """One version's batcher's metrics: the shared histograms, its own counters by version, and the
    queue depth summed over every version's queue."""

    def __init__(self, metrics: Metrics, version: int, depths: dict[int, int], serving: bool = True) -> None:
        self.metrics = metrics
        self.tag = str(version)
        self.version = version
        self.depths = depths
        self.serving = serving  # a shadow's batches stay out of the shared batch and queue metrics
        self.texts = metrics.version_texts.labels(self.tag)
        self.compute = metrics.version_compute_seconds.labels(self.tag)

    def batch_done(self, size: int, padded_length: int, real_tokens: int, seconds: float) -> None:
        if self.serving:
            self.metrics.batch_done(size, padded_length, real_tokens, seconds)
        self.texts.inc(size)
        self.compute.inc(seconds)

    def queue_wait(self, seconds: float, priority: Priority) -> None:
        if self.serving:
            self.metrics.queue_wait(seconds, priority)

    def dropped(self, reason: str, count: int) -> None:
        if self.serving:
            self.metrics.dropped(reason, count)

    def cache_lookups(self, hits: int, misses: int) -> None:
        self.metrics.cache_lookups(hits, misses)

    def queue_depth(self, depth: int) -> None:
        self.depths[self.version] = depth if self.serving else 0
        self.metrics.queue_depth(sum(self.depths.values()))


class Loaded:
    """A version in the table, and the calls holding it."""

    def __init__(self, engine: Engine, observer: VersionObserver, shadow: bool) -> None:
        self.engine = engine
        self.observer = observer
        self.shadow = shadow
        self.calls = 0
        self.idle = asyncio.Event()
        self.idle.set()

    @contextlib.contextmanager
    def hold(self) -> Iterator[Engine]:
        """The engine, counted as in use until the block ends: unloading waits for `idle`."""
        self.calls += 1
        self.idle.clear()
        try:
            yield self.engine
        finally:
            self.calls -= 1
            if not self.calls:
                self.idle.set()
