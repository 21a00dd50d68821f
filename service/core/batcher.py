"""The batching loop: forms rounds from the fair queue and runs them on worker threads.

A round (fair_queue.py says which texts it takes) runs on one worker as one or more batches, each
of texts of similar length padded to its longest, back to back, shortest first; each batch's texts
are answered as soon as it ends. A round closes when it is full, when the oldest waiting text has waited
max_queue_delay, or at once when no round is running: waiting only pays off while the runtime is
busy, so a quiet server adds no delay. Up to max_concurrent_batches rounds run at once in worker
threads while the event loop keeps accepting and the next round forms; when several workers are
idle, the round is shared among them by length (short texts with short ones), so that each works
with little padding.

Why each batch is answered as it ends, not the round together: a short text that shares its round
with long ones (a light caller's text beside a heavy request's) would otherwise wait for their
batch too, and the fairness promise (a light caller waits for about one batch, fair_queue.py) would
hold for rounds, not for batches. The long texts lose nothing: their batch ends when it would.

A worker is kept for interactive callers while they are about (core/slots.py).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from model_contract import pad
from service.core.errors import RuntimeFailure
from service.core.fair_queue import (
    BatchLimits,
    FairQueue,
    Item,
    ItemResult,
    Priority,
    QueueObserver,
    same_once,
    share,
    split_by_length,
)
from service.core.slots import Slots


@dataclass(frozen=True)
class BatchFacts:
    """What one batch was, for its span: when its round started, when it ran and for how long (time
    .monotonic()), its shape and real tokens, whether it ran wide (alone, with every thread) and
    whether the runtime failed on it."""

    round_started: float
    began: float
    seconds: float
    size: int
    padded_length: int
    tokens: int
    wide: bool
    failed: bool


class BatchTracer(Protocol):
    """What the batcher asks of tracing (ops/tracing.py's BatchTracing): a batch's span, linked to
    the sampled calls whose texts rode in it, and the ride those texts record (None when none was
    sampled)."""

    def batch(self, calls: Iterable[Any], facts: BatchFacts) -> Any: ...


log = logging.getLogger(__name__)

Int64Array = NDArray[np.int64]
# (input_ids, attention_mask, wants, wide) -> one result per row, run in a worker thread. wants[row]
# is what that text's caller asked for (opaque here), or None when the caller has gone: its row still
# runs with the batch, but whatever work beyond the model the answer needs can be skipped. wide: the
# batch's round runs alone, with every core (see BatchLimits.wide_when_alone).
RunFn = Callable[[Int64Array, Int64Array, Sequence[Any], bool], Sequence[Any]]


class BatchObserver(QueueObserver, Protocol):
    """Receives what the batcher does, for metrics."""

    def batch_done(self, size: int, padded_length: int, real_tokens: int, seconds: float) -> None: ...

    def queue_wait(self, seconds: float, priority: Priority) -> None: ...


@dataclass(frozen=True)
class BatchRun:
    """One batch of a round as it ran: its items, their padded ids and mask, and the run function's
    rows (None when the runtime failed on it)."""

    items: list[Item]
    ids: Int64Array
    mask: Int64Array
    rows: Sequence[Any] | None
    began: float  # time.monotonic() as the batch started
    seconds: float


class Batcher:
    """The fair queue and the task that forms and runs its rounds."""

    def __init__(
        self,
        run: RunFn,
        limits: BatchLimits,
        observer: BatchObserver | None = None,
        tracing: BatchTracer | None = None,
        once: bool = False,
    ) -> None:
        """once: identical texts (the same tokens, asking the same) in one round run once (the answer
        cache's companion: --cache-entries)."""
        self._run_fn = run
        self._once = once
        self.limits = limits
        self._observer = observer
        self._tracing = tracing
        self._queue = FairQueue(limits, observer)
        self._wakeup = asyncio.Event()
        self._slots = Slots(limits.max_concurrent_batches)
        self._running: set[asyncio.Task[None]] = set()
        self._busy = 0  # rounds whose batches are running: the worker threads they hold
        self._executor = ThreadPoolExecutor(
            max_workers=limits.max_concurrent_batches, thread_name_prefix="onnxruntime"
        )
        self._loop_task: asyncio.Task[None] | None = None
        self._shared: list[list[Item]] = []  # rounds formed for the other idle workers
        self._arrived = 0  # texts submitted so far

    @property
    def depth(self) -> int:
        """Texts waiting for a round."""
        return len(self._queue)

    @property
    def idle(self) -> bool:
        """No round running or formed, and no text waiting: the cores are not this batcher's now."""
        return not self._busy and not self._shared and not self._queue

    def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(self._form_rounds(), name="batcher")

    async def stop(self) -> None:
        """Stop taking items, run every item already queued, then release the worker threads."""
        self.close()
        if self._loop_task is not None:
            await self._loop_task
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        self._executor.shutdown(wait=True)

    @property
    def accepting(self) -> bool:
        """Started and not closed: whether new texts may be queued."""
        return self._loop_task is not None and not self._queue.closed

    def close(self) -> None:
        """Admit nothing more; what is queued still runs, without waiting for company (stop() waits
        for it)."""
        self._queue.close()
        self._wakeup.set()

    def admit(self, count: int, priority: Priority = Priority.NORMAL) -> None:
        """Raise unless `count` more texts may be queued now (FairQueue.admit): callers check before
        paying for tokenizing, and submit checks again."""
        self._queue.admit(count, priority)

    def submit(
        self,
        sequences: Sequence[Sequence[int]],
        want: Any,
        deadline: float | None,
        trace: Any = None,
        priority: Priority = Priority.NORMAL,
    ) -> list[asyncio.Future[ItemResult]]:
        """Queue every sequence of one request, or none: a full queue refuses at once. trace: the
        request's span when it is sampled (service/ops/tracing), for its batches to link to."""
        futures = self._queue.push(sequences, want, deadline, trace, priority)
        self._arrived += len(futures)
        if priority is Priority.HIGH:
            self._slots.saw_high()
        self._wakeup.set()
        return futures

    async def _wait_for_wakeup(self, timeout_s: float | None) -> None:
        self._wakeup.clear()
        try:
            async with asyncio.timeout(timeout_s):
                await self._wakeup.wait()
        except TimeoutError:
            pass

    async def _next_round(self) -> list[Item] | None:
        """The next round to run, or None once closing and nothing is left."""
        queue = self._queue
        while True:
            if self._shared:  # formed with the last round, for a worker that was idle then
                return self._shared.pop(0)
            queue.drop_gone()
            if not queue:
                if queue.closed:
                    return None
                await self._wait_for_wakeup(None)
                continue
            wait_s = queue.seconds_until_round(busy=bool(self._busy))
            if wait_s:
                await self._wait_for_wakeup(wait_s)
                continue
            now = time.monotonic()
            less_urgent = not queue.closed and queue.head_rank(now) > Priority.HIGH  # closing: run all
            kept_s = self._slots.kept_for(now) if less_urgent else 0.0
            if kept_s and not self._slots.free:  # the slot this loop holds is the one kept
                await self._wait_for_wakeup(kept_s)
                continue
            round_ = queue.take_round()
            # with several workers idle, share the round among them by length: every core works,
            # and each part pads less (the kept worker aside)
            idle = self.limits.max_concurrent_batches - self._busy - bool(kept_s)
            if idle > 1 and len(round_) > 1:
                round_, *self._shared = share(round_, idle)
            return round_

    async def _form_rounds(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.take()
            round_ = await self._next_round()
            if round_ is None:
                self._slots.give()
                return
            alone = not self._busy and not self._queue and not self._shared
            wide = self.limits.wide_when_alone and self._slots.runs_wide(alone, round_[0].priority)
            held = await self._slots.take_all() if wide else 1  # all free: nothing runs
            self._busy += 1
            free = functools.partial(self._free, held, self._arrived if alone else None)
            task = loop.create_task(self._run_and_answer(round_, wide, free))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    def _free(self, held: int, arrived: int | None) -> None:
        """A round's last batch ended: its worker threads (`held` slots) take the next round. Called
        before that batch is answered, so that a caller who sends again at once finds the runtime
        as it is (nothing running, when this was the only round). arrived: for a round that started
        alone, the texts submitted before it started; whether more came since updates `joined`."""
        if arrived is not None:
            self._slots.lone_round_ended(joined=self._arrived > arrived)
        self._busy -= 1
        self._slots.give(held)
        self._wakeup.set()  # the delay rule depends on whether a round is running

    async def _run_and_answer(self, round_: list[Item], wide: bool, free: Callable[[], None]) -> None:
        started = time.monotonic()
        copies: dict[int, list[Item]] = {}
        if self._once:
            round_, copies = same_once(round_)
        await self._run(round_, wide, started, copies, free)

    async def _run(
        self,
        round_: list[Item],
        wide: bool,
        started: float,
        copies: dict[int, list[Item]],
        free: Callable[[], None],
    ) -> None:
        """Run the round's batches back to back on one worker thread, each answered on the event loop
        as soon as it ends (free() first, for the last); a batch the runtime fails on has rows None,
        and the others still run."""
        parts = split_by_length(round_, self.limits)
        padded = [pad([item.ids for item in batch]) for batch in parts]

        def want(item: Item) -> Any:
            """What the row is for: nothing once every caller it answers has gone."""
            waiting = [each for each in (item, *copies.get(id(item), ())) if not each.future.done()]
            return item.want if waiting else None

        wants = [[want(item) for item in batch] for batch in parts]
        run = self._run_fn
        loop = asyncio.get_running_loop()
        ended: list[int] = []  # batches whose answer is on its way to the event loop

        def answer(done: BatchRun, last: bool) -> None:
            if last:
                free()
            self._answer(done, started, wide, copies)

        def run_all() -> None:
            for index, (batch, (ids, mask), batch_wants) in enumerate(zip(parts, padded, wants, strict=True)):
                began = time.monotonic()
                rows: Sequence[Any] | None
                try:
                    rows = run(ids, mask, batch_wants, wide)
                except Exception:
                    log.exception("the runtime failed on a batch of %d x %d", *ids.shape)
                    rows = None
                ended.append(index)
                done = BatchRun(batch, ids, mask, rows, began, time.monotonic() - began)
                loop.call_soon_threadsafe(answer, done, index == len(parts) - 1)

        try:
            await loop.run_in_executor(self._executor, run_all)
        except Exception:  # the executor itself (never the model: run_all catches that)
            log.exception("a round of %d texts could not run", len(round_))
            now = time.monotonic()
            for index, (batch, (ids, mask)) in enumerate(zip(parts, padded, strict=True)):
                if index not in ended:
                    answer(BatchRun(batch, ids, mask, None, now, 0.0), index == len(parts) - 1)

    def _answer(self, run: BatchRun, started: float, wide: bool, copies: dict[int, list[Item]]) -> None:
        """Answer every text of a batch that ran, as it ends: its row, or RuntimeFailure when the
        batch failed; callers that went away are skipped. started: when its round started; copies:
        the texts each run text stood for too."""
        observer = self._observer
        tracing = self._tracing
        size, padded_length = run.ids.shape
        tokens = int(run.mask.sum())
        seconds = run.began + run.seconds - started  # from the round's start to this batch's end
        ride = None
        answered = [[item, *copies.get(id(item), ())] for item in run.items]
        if tracing is not None:
            calls = (each.trace for same in answered for each in same)
            facts = BatchFacts(
                started, run.began, run.seconds, size, padded_length, tokens, wide, run.rows is None
            )
            ride = tracing.batch(calls, facts)
        if run.rows is None:
            for same in answered:
                for item in same:
                    if not item.future.done():
                        item.future.set_exception(
                            RuntimeFailure("the model failed on the batch holding this text; retry")
                        )
            return
        for same, row in zip(answered, run.rows, strict=True):
            for item in same:
                if item.future.done():  # the caller went away while the batch ran
                    continue
                waited = started - item.enqueued
                item.future.set_result(ItemResult(row, waited, seconds, size, padded_length, ride))
                if observer:
                    observer.queue_wait(waited, item.priority)
        if observer:
            observer.batch_done(size, padded_length, tokens, run.seconds)
