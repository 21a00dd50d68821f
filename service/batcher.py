"""Dynamic batching: callers' texts queue up and run together, grouped by length, padded, masked.

A batch closes when it is full (max_batch_size texts, or max_batch_tokens padded tokens), when the
oldest waiting text has waited max_queue_delay, or at once when no batch is running: waiting
only pays off while the runtime is busy, so a quiet server adds no delay. Up to
max_concurrent_batches run at once in worker threads while the event loop keeps accepting and the
next batch forms.

Fairness between requests (start-time fair queuing, with tokens as the cost): each text gets a
start tag, the virtual time when its turn comes. A request's first text starts at the current
virtual time, each further text of the same request after the tokens of the texts before it. Every
batch is seeded with the text of the smallest tag and filled with texts of similar length, and the
virtual time moves to the seed's tag. So a request of 256 long texts queued just before a one-text
request does not go ahead of it as a whole: the short text's tag is reached after about one batch
of the long request's texts, and two large requests share the runtime in proportion to their tokens.

The tail is bounded: a text that arrives later never gets a smaller tag (the virtual time never goes
back, and ties go to the older text), so it can join a batch as a neighbour but never take an
earlier text's turn as its seed. A text therefore seeds a batch, whatever its length, at the latest
once the texts queued before it have run: it waits for at most as many batches as there were texts
ahead of it when it arrived (fewer, as batches carry several), and a stream of later short texts,
however well they batch together, cannot starve one long text.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from model_contract import pad as pad_ids
from service.errors import DeadlineExpired, InvalidInput, NotServing, QueueFull, RuntimeFailure

# a call that ends this close to its deadline ran out of time: the caller's timer fires a little
# before the server's copy of the deadline (which started when the call arrived)
DEADLINE_SLACK_S = 0.25

# a lone batch runs wide only once this many batches before it also ran alone: a server this quiet
# is serving one caller at a time; under load, even light, two narrow batches side by side serve
# more (measured with Poisson arrivals at 240 sentences/s: p99 100 ms with every lone batch wide)
QUIET_BATCHES = 4

log = logging.getLogger(__name__)

Int64Array = NDArray[np.int64]
# (input_ids, attention_mask, wants, wide) -> one result per row, run in a worker thread. wants[row]
# is what that text's caller asked for (opaque here), or None when the caller has gone: its row still
# runs with the batch, but whatever work beyond the model the answer needs can be skipped. wide: the
# batch runs alone, with every core (see BatchLimits.wide_when_alone).
RunFn = Callable[[Int64Array, Int64Array, Sequence[Any], bool], Sequence[Any]]


@dataclass(eq=False)
class Item:
    """One text waiting for its batch."""

    ids: Sequence[int]
    want: Any  # passed to the run function with this text's row
    deadline: float | None  # time.monotonic() after which the caller no longer waits
    future: asyncio.Future[ItemResult]
    enqueued: float = field(default_factory=time.monotonic)
    start: float = 0.0  # fair-queuing tag: the virtual time (in tokens) when this text's turn comes

    @property
    def length(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class ItemResult:
    """The run function's result for one text, and what the batcher did for it."""

    value: Any
    queue_seconds: float
    compute_seconds: float
    batch_size: int
    padded_length: int


class BatchObserver(Protocol):
    """Receives what the batcher does, for metrics."""

    def batch_done(self, size: int, padded_length: int, real_tokens: int, seconds: float) -> None: ...

    def queue_wait(self, seconds: float) -> None: ...

    def dropped(self, reason: str, count: int) -> None: ...

    def queue_depth(self, depth: int) -> None: ...


@dataclass(frozen=True)
class BatchLimits:
    """The batcher's limits; their defaults live in one place, the settings (batch_limits())."""

    max_batch_size: int
    max_batch_tokens: int
    max_queue_delay_s: float
    max_queue_size: int
    max_concurrent_batches: int
    max_padding_ratio: float  # most of a batch's padded tokens that may be padding
    # a batch that starts with nothing running and nothing left waiting runs wide (every core), and
    # no other batch starts until it ends: a wide batch beside a narrow one oversubscribes the cores
    # and its threads wait for each other (measured: p99 at 240 sentences/s open load 123 -> 61 ms)
    wide_when_alone: bool


def select(pending: Sequence[Item], limits: BatchLimits, most: int | None = None) -> list[Item]:
    """Choose the next batch: the item whose turn it is (the smallest start tag, then the oldest)
    and the items closest to it in length.

    The batch grows from that item's place in length order,
    each step taking the neighbour nearer in length, while it stays within the limits: texts
    (and `most`, when given), padded tokens, and the share of padding. Padding costs compute
    for nothing, so a wide spread of lengths makes several tight batches rather than one loose one.
    """
    by_length = sorted(pending, key=lambda item: item.length)
    oldest = min(pending, key=lambda item: (item.start, item.enqueued))
    start = by_length.index(oldest)
    low, high = start, start + 1  # the batch is by_length[low:high]
    longest, real = oldest.length, oldest.length
    size_limit = min(limits.max_batch_size, most or limits.max_batch_size)

    def fits(candidate: Item) -> bool:
        count = high - low + 1
        padded = max(longest, candidate.length) * count
        return padded <= limits.max_batch_tokens and (
            1 - (real + candidate.length) / padded <= limits.max_padding_ratio
        )

    while high - low < size_limit:
        below = by_length[low - 1] if low > 0 else None
        above = by_length[high] if high < len(by_length) else None
        fits_below = below is not None and fits(below)
        fits_above = above is not None and fits(above)
        if fits_below and fits_above:
            assert below is not None and above is not None
            take_below = oldest.length - below.length <= above.length - oldest.length
        elif fits_below or fits_above:
            take_below = fits_below
        else:
            break
        if take_below:
            low -= 1
            real += by_length[low].length
        else:
            longest = max(longest, by_length[high].length)
            real += by_length[high].length
            high += 1
    return by_length[low:high]


def pad(items: Sequence[Item]) -> tuple[Int64Array, Int64Array]:
    """The batch as the model reads it: ids right-padded to the longest item, and the mask."""
    return pad_ids([item.ids for item in items])


class Batcher:
    """Bounded queue of items and the task that forms and runs their batches."""

    def __init__(self, run: RunFn, limits: BatchLimits, observer: BatchObserver | None = None) -> None:
        self._run_fn = run
        self.limits = limits
        self._observer = observer
        self._pending: list[Item] = []  # arrival order
        self._wakeup = asyncio.Event()
        self._slots = asyncio.Semaphore(limits.max_concurrent_batches)
        self._running: set[asyncio.Task[None]] = set()
        self._executor = ThreadPoolExecutor(
            max_workers=limits.max_concurrent_batches, thread_name_prefix="onnxruntime"
        )
        self._loop_task: asyncio.Task[None] | None = None
        self._closing = False
        self._split = False  # the last batch left similar items behind for an idle worker
        self._virtual = 0.0  # fair-queuing virtual time: the start tag of the last batch's seed
        self._quiet = 0  # batches in a row that started with nothing running or waiting

    @property
    def depth(self) -> int:
        """Texts waiting for a batch."""
        return len(self._pending)

    def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._form_batches(), name="batcher")

    async def stop(self) -> None:
        """Stop taking items, run every item already queued, then release the worker threads."""
        self._closing = True
        self._wakeup.set()
        if self._loop_task is not None:
            await self._loop_task
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        self._executor.shutdown(wait=True)

    def check_room(self, count: int) -> None:
        """QueueFull (counted as dropped) unless `count` more texts fit in the queue now."""
        if len(self._pending) + count > self.limits.max_queue_size:
            if self._observer:
                self._observer.dropped("queue_full", count)
            raise QueueFull(
                f"the queue holds {len(self._pending)} texts and this request adds {count}; "
                f"the limit is {self.limits.max_queue_size}: retry later"
            )

    def submit(
        self, sequences: Sequence[Sequence[int]], want: Any, deadline: float | None
    ) -> list[asyncio.Future[ItemResult]]:
        """Queue every sequence of one request, or none: a full queue refuses at once."""
        if self._closing:
            raise NotServing("the server is shutting down")
        if len(sequences) > self.limits.max_queue_size:
            raise InvalidInput(
                f"the request has {len(sequences)} texts and the queue holds at most "
                f"{self.limits.max_queue_size}: it can never be taken; send fewer texts per request"
            )
        self.check_room(len(sequences))
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        futures: list[asyncio.Future[ItemResult]] = []
        start = self._virtual
        for ids in sequences:
            future: asyncio.Future[ItemResult] = loop.create_future()
            self._pending.append(Item(ids, want, deadline, future, now, start))
            futures.append(future)
            start += len(ids)
        if self._observer:
            self._observer.queue_depth(len(self._pending))
        self._wakeup.set()
        return futures

    def _drop_gone(self) -> None:
        """Forget items whose caller cancelled; fail those whose deadline passed."""
        now = time.monotonic()
        kept, cancelled, expired = [], 0, 0
        for item in self._pending:
            if item.future.done():  # the call went: out of time when its deadline was (nearly) due
                if item.deadline is not None and now >= item.deadline - DEADLINE_SLACK_S:
                    expired += 1
                else:
                    cancelled += 1
            elif item.deadline is not None and now >= item.deadline:
                expired += 1
                item.future.set_exception(
                    DeadlineExpired(f"the deadline passed after {now - item.enqueued:.3f} s in the queue")
                )
            else:
                kept.append(item)
        if cancelled or expired:
            self._pending = kept
            if self._observer:
                if cancelled:
                    self._observer.dropped("cancelled", cancelled)
                if expired:
                    self._observer.dropped("deadline", expired)

    def _ready(self) -> float | None:
        """0 when a batch should close now, else the seconds until the oldest item's delay ends."""
        if self._closing or not self._running or self._split:
            return 0.0
        if len(self._pending) >= self.limits.max_batch_size:
            return 0.0
        longest = max(item.length for item in self._pending)
        if longest * len(self._pending) >= self.limits.max_batch_tokens:
            return 0.0
        waited = time.monotonic() - self._pending[0].enqueued
        return max(0.0, self.limits.max_queue_delay_s - waited)

    async def _next_batch(self) -> list[Item] | None:
        while True:
            self._drop_gone()
            if not self._pending:
                if self._closing:
                    return None
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            wait = self._ready()
            if not wait:
                # with several workers idle, share the waiting items among them, each batch of
                # similar lengths: both cores work and each batch carries less padding
                idle = self.limits.max_concurrent_batches - len(self._running)
                most = -(-len(self._pending) // idle)
                batch = select(self._pending, self.limits, most)
                self._virtual = max(self._virtual, min(item.start for item in batch))
                self._split = idle > 1 and len(batch) < len(self._pending)
                chosen = set(map(id, batch))
                self._pending = [item for item in self._pending if id(item) not in chosen]
                if self._observer:
                    self._observer.queue_depth(len(self._pending))
                return batch
            self._wakeup.clear()
            try:
                async with asyncio.timeout(wait):
                    await self._wakeup.wait()
            except TimeoutError:
                pass

    async def _form_batches(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()
            batch = await self._next_batch()
            if batch is None:
                self._slots.release()
                return
            alone = not self._running and not self._pending
            self._quiet = self._quiet + 1 if alone else 0
            wide = self.limits.wide_when_alone and alone and self._quiet > QUIET_BATCHES
            held = 1
            if wide:  # it uses every core: hold every slot until it ends (all free: nothing runs)
                while held < self.limits.max_concurrent_batches:
                    await self._slots.acquire()
                    held += 1
            task = loop.create_task(self._run_batch(batch, wide))
            self._running.add(task)
            task.add_done_callback(functools.partial(self._batch_finished, held))

    def _batch_finished(self, held: int, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        for _ in range(held):
            self._slots.release()
        self._wakeup.set()  # the delay rule depends on whether a batch is running

    async def _run_batch(self, batch: list[Item], wide: bool = False) -> None:
        started = time.monotonic()
        ids, mask = pad(batch)
        wants = [None if item.future.done() else item.want for item in batch]
        try:
            values = await asyncio.get_running_loop().run_in_executor(
                self._executor, self._run_fn, ids, mask, wants, wide
            )
        except Exception:
            log.exception("the runtime failed on a batch of %d x %d", *ids.shape)
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(
                        RuntimeFailure("the model failed on the batch holding this text; retry")
                    )
            return
        seconds = time.monotonic() - started
        size, padded_length = ids.shape
        for item, value in zip(batch, values, strict=True):
            if item.future.done():  # the caller went away while the batch ran
                continue
            item.future.set_result(ItemResult(value, started - item.enqueued, seconds, size, padded_length))
            if self._observer:
                self._observer.queue_wait(started - item.enqueued)
        if self._observer:
            self._observer.batch_done(size, padded_length, int(mask.sum()), seconds)
