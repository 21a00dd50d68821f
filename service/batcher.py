"""Dynamic batching: callers' texts queue up and run together, grouped by length, padded, masked.

The batcher takes the queued texts in rounds. A round is the texts whose turn it is (below), up to
max_batch_size texts and max_batch_tokens real tokens. It runs on one worker as one or more
batches, each of texts of similar length padded to its longest (no batch is more than
max_padding_ratio padding), back to back; every text of the round is answered when its last batch
ends. A round closes when it is full, when the oldest waiting text has waited max_queue_delay, or
at once when no round is running: waiting only pays off while the runtime is busy, so a quiet
server adds no delay. Up to max_concurrent_batches rounds run at once in worker threads while the
event loop keeps accepting and the next round forms; when several workers are idle, the round is
shared among them by length (short texts with short ones), so that each works with little padding.

Why rounds, answered together: padding costs compute for nothing, so texts of different lengths
must run in different batches; but a batcher that picks, from the whole queue, the texts that pad
well together lets those jump ahead of the others, and the others wait for several batches.
Taking texts in turn order and sorting only within the round keeps the padding low and gives every
text in the queue the same wait: measured at 64 closed-loop callers on the default model (movie
snippets of 1 to 46 words, 2 cores), p99 went from 1.9-2.0x p50 to 1.4x at the same throughput,
and with a quarter of long reviews from 2.0-2.1x to 1.4-1.7x. Answering each batch as it ended
(shortest first) lost that: 1.9x, the long texts waiting for the short ones' batches.

Fairness between requests (start-time fair queuing, with tokens as the cost): each text gets a
start tag, the virtual time when its turn comes. A request's first text starts at the current
virtual time, each further text of the same request after the tokens of the texts before it. A
round takes the texts of the smallest tags (ties: the oldest), and the virtual time moves to the
largest tag it took. So a request of 256 long texts queued just before a one-text request does
not go ahead of it as a whole: the short text's tag is reached after about one round of the long
request's texts, and two large requests share the runtime in proportion to their tokens.

The tail is bounded: a text that arrives later never gets a smaller tag (the virtual time never goes
back, and ties go to the older text), so it never takes an earlier text's turn. A text therefore
runs, whatever its length, at the latest in the round after the texts queued before it: it waits
for at most as many rounds as there were texts ahead of it when it arrived (fewer, as rounds carry
several), and a stream of later short texts, however well they batch together, cannot starve one
long text.
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

# a lone round runs wide only once this many rounds before it also ran alone: a server this quiet
# is serving one caller at a time; under load, even light, two narrow rounds side by side serve
# more (measured with Poisson arrivals at 240 sentences/s: p99 100 ms with every lone batch wide)
QUIET_ROUNDS = 4

log = logging.getLogger(__name__)

Int64Array = NDArray[np.int64]
# (input_ids, attention_mask, wants, wide) -> one result per row, run in a worker thread. wants[row]
# is what that text's caller asked for (opaque here), or None when the caller has gone: its row still
# runs with the batch, but whatever work beyond the model the answer needs can be skipped. wide: the
# batch's round runs alone, with every core (see BatchLimits.wide_when_alone).
RunFn = Callable[[Int64Array, Int64Array, Sequence[Any], bool], Sequence[Any]]


@dataclass(eq=False)
class Item:
    """One text waiting for its round."""

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
    # a round that starts with nothing running and nothing left waiting runs wide (every core), and
    # no other round starts until it ends: a wide batch beside a narrow one oversubscribes the cores
    # and its threads wait for each other (measured: p99 at 240 sentences/s open load 123 -> 61 ms)
    wide_when_alone: bool


def select(pending: Sequence[Item], limits: BatchLimits) -> list[Item]:
    """The next round: the texts whose turn it is (the smallest start tags, then the oldest), up to
    max_batch_size texts and max_batch_tokens real tokens; always at least one."""
    chosen: list[Item] = []
    tokens = 0
    for item in sorted(pending, key=lambda item: (item.start, item.enqueued)):
        full = len(chosen) == limits.max_batch_size or tokens + item.length > limits.max_batch_tokens
        if chosen and full:
            break
        chosen.append(item)
        tokens += item.length
    return chosen


def batches(round_: Sequence[Item], limits: BatchLimits) -> list[list[Item]]:
    """The round's batches, shortest first: each takes the next texts in length order while it stays
    within max_batch_tokens padded tokens and max_padding_ratio padding."""
    out: list[list[Item]] = []
    batch: list[Item] = []
    real = 0
    for item in sorted(round_, key=lambda item: item.length):
        padded = item.length * (len(batch) + 1)  # sorted: the newcomer is the longest
        if batch and (
            padded > limits.max_batch_tokens or 1 - (real + item.length) / padded > limits.max_padding_ratio
        ):
            out.append(batch)
            batch, real = [], 0
        batch.append(item)
        real += item.length
    if batch:
        out.append(batch)
    return out


def share(round_: Sequence[Item], workers: int) -> list[list[Item]]:
    """The round cut, in length order, into up to `workers` rounds of about as many texts each."""
    ordered = sorted(round_, key=lambda item: item.length)
    size = -(-len(ordered) // workers)
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


def pad(items: Sequence[Item]) -> tuple[Int64Array, Int64Array]:
    """The batch as the model reads it: ids right-padded to the longest item, and the mask."""
    return pad_ids([item.ids for item in items])


class Batcher:
    """Bounded queue of items and the task that forms and runs their rounds."""

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
        self._shared: list[list[Item]] = []  # rounds formed for the other idle workers
        self._virtual = 0.0  # fair-queuing virtual time: the largest start tag taken so far
        self._quiet = 0  # rounds in a row that started with nothing running or waiting

    @property
    def depth(self) -> int:
        """Texts waiting for a round."""
        return len(self._pending)

    def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._form_rounds(), name="batcher")

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
        """0 when a round should close now, else the seconds until the oldest item's delay ends."""
        if self._closing or not self._running or len(self._pending) >= self.limits.max_batch_size:
            return 0.0
        if sum(item.length for item in self._pending) >= self.limits.max_batch_tokens:
            return 0.0
        waited = time.monotonic() - self._pending[0].enqueued
        return max(0.0, self.limits.max_queue_delay_s - waited)

    async def _next_round(self) -> list[Item] | None:
        """The next round to run, or None once closing and nothing is left."""
        while True:
            if self._shared:  # formed with the last round, for a worker that was idle then
                return self._shared.pop(0)
            self._drop_gone()
            if not self._pending:
                if self._closing:
                    return None
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            wait = self._ready()
            if not wait:
                round_ = select(self._pending, self.limits)
                self._virtual = max(self._virtual, max(item.start for item in round_))
                chosen = set(map(id, round_))
                self._pending = [item for item in self._pending if id(item) not in chosen]
                if self._observer:
                    self._observer.queue_depth(len(self._pending))
                # with several workers idle, share the round among them by length: every core
                # works, and each part pads less
                idle = self.limits.max_concurrent_batches - len(self._running)
                if idle > 1 and len(round_) > 1:
                    round_, *self._shared = share(round_, idle)
                return round_
            self._wakeup.clear()
            try:
                async with asyncio.timeout(wait):
                    await self._wakeup.wait()
            except TimeoutError:
                pass

    async def _form_rounds(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()
            round_ = await self._next_round()
            if round_ is None:
                self._slots.release()
                return
            alone = not self._running and not self._pending and not self._shared
            self._quiet = self._quiet + 1 if alone else 0
            wide = self.limits.wide_when_alone and alone and self._quiet > QUIET_ROUNDS
            held = 1
            if wide:  # it uses every core: hold every slot until it ends (all free: nothing runs)
                while held < self.limits.max_concurrent_batches:
                    await self._slots.acquire()
                    held += 1
            task = loop.create_task(self._run_round(round_, wide))
            self._running.add(task)
            task.add_done_callback(functools.partial(self._round_finished, held))

    def _round_finished(self, held: int, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        for _ in range(held):
            self._slots.release()
        self._wakeup.set()  # the delay rule depends on whether a round is running

    async def _run_round(self, round_: list[Item], wide: bool = False) -> None:
        """Run the round's batches back to back on one worker, then answer all its texts."""
        parts = batches(round_, self.limits)
        padded = [pad(batch) for batch in parts]
        wants = [[None if item.future.done() else item.want for item in batch] for batch in parts]
        run = self._run_fn

        def run_all() -> list[tuple[Sequence[Any] | None, float]]:
            done: list[tuple[Sequence[Any] | None, float]] = []
            for (ids, mask), batch_wants in zip(padded, wants, strict=True):
                began = time.monotonic()
                try:
                    done.append((run(ids, mask, batch_wants, wide), time.monotonic() - began))
                except Exception:
                    log.exception("the runtime failed on a batch of %d x %d", *ids.shape)
                    done.append((None, time.monotonic() - began))
            return done

        started = time.monotonic()
        try:
            results = await asyncio.get_running_loop().run_in_executor(self._executor, run_all)
        except Exception:  # the executor itself (never the model: run_all catches that)
            log.exception("a round of %d texts could not run", len(round_))
            results = [(None, 0.0)] * len(parts)
        seconds = time.monotonic() - started
        for batch, (ids, mask), (values, batch_seconds) in zip(parts, padded, results, strict=True):
            size, padded_length = ids.shape
            if values is None:
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(
                            RuntimeFailure("the model failed on the batch holding this text; retry")
                        )
                continue
            for item, value in zip(batch, values, strict=True):
                if item.future.done():  # the caller went away while the round ran
                    continue
                waited = started - item.enqueued
                item.future.set_result(ItemResult(value, waited, seconds, size, padded_length))
                if self._observer:
                    self._observer.queue_wait(waited)
            if self._observer:
                self._observer.batch_done(size, padded_length, int(mask.sum()), batch_seconds)
