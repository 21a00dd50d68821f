"""The batching loop: forms rounds from the fair queue and runs them on worker threads.

A round (fair_queue.py says which texts it takes) runs on one worker as one or more batches, each
of texts of similar length padded to its longest, back to back; every text of the round is answered
when its last batch ends. A round closes when it is full, when the oldest waiting text has waited
max_queue_delay, or at once when no round is running: waiting only pays off while the runtime is
busy, so a quiet server adds no delay. Up to max_concurrent_batches rounds run at once in worker
threads while the event loop keeps accepting and the next round forms; when several workers are
idle, the round is shared among them by length (short texts with short ones), so that each works
with little padding.

Why a round is answered together: answering each batch as it ends (shortest first) lets the long
texts of a round wait for the short ones' batches, and the tail grows with the mix of lengths.
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
    QueueObserver,
    share,
    split_by_length,
)


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


# a lone round runs wide only once this many rounds before it also ran alone: a server this quiet
# is serving one caller at a time; under load, even light, two narrow rounds side by side serve more
QUIET_ROUNDS = 4

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

    def queue_wait(self, seconds: float) -> None: ...


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


def same_once(round_: list[Item]) -> tuple[list[Item], dict[int, list[Item]]]:
    """The round with each distinct text once (the same tokens, asking the same; a text whose caller
    went away is left as it is), and for each text kept, by id, the others it stands for."""
    kept: list[Item] = []
    first: dict[tuple[tuple[int, ...], Any], Item] = {}
    copies: dict[int, list[Item]] = {}
    for item in round_:
        if item.future.done():
            kept.append(item)
            continue
        key = (tuple(item.ids), item.want)
        twin = first.get(key)
        if twin is None:
            first[key] = item
            kept.append(item)
        else:
            copies.setdefault(id(twin), []).append(item)
    return kept, copies


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
        self._slots = asyncio.Semaphore(limits.max_concurrent_batches)
        self._running: set[asyncio.Task[None]] = set()
        self._executor = ThreadPoolExecutor(
            max_workers=limits.max_concurrent_batches, thread_name_prefix="onnxruntime"
        )
        self._loop_task: asyncio.Task[None] | None = None
        self._shared: list[list[Item]] = []  # rounds formed for the other idle workers
        self._quiet = 0  # rounds in a row that started with nothing running or waiting

    @property
    def depth(self) -> int:
        """Texts waiting for a round."""
        return len(self._queue)

    @property
    def idle(self) -> bool:
        """No round running or formed, and no text waiting: the cores are not this batcher's now."""
        return not self._running and not self._shared and not self._queue

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

    def admit(self, count: int) -> None:
        """Raise unless `count` more texts may be queued now (FairQueue.admit): callers check before
        paying for tokenizing, and submit checks again."""
        self._queue.admit(count)

    def submit(
        self, sequences: Sequence[Sequence[int]], want: Any, deadline: float | None, trace: Any = None
    ) -> list[asyncio.Future[ItemResult]]:
        """Queue every sequence of one request, or none: a full queue refuses at once. trace: the
        request's span when it is sampled (service/ops/tracing), for its batches to link to."""
        futures = self._queue.push(sequences, want, deadline, trace)
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
            wait_s = queue.seconds_until_round(busy=bool(self._running))
            if wait_s:
                await self._wait_for_wakeup(wait_s)
                continue
            round_ = queue.take_round()
            # with several workers idle, share the round among them by length: every core works,
            # and each part pads less
            idle = self.limits.max_concurrent_batches - len(self._running)
            if idle > 1 and len(round_) > 1:
                round_, *self._shared = share(round_, idle)
            return round_

    async def _form_rounds(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()
            round_ = await self._next_round()
            if round_ is None:
                self._slots.release()
                return
            alone = not self._running and not self._queue and not self._shared
            self._quiet = self._quiet + 1 if alone else 0
            wide = self.limits.wide_when_alone and alone and self._quiet > QUIET_ROUNDS
            held = 1
            if wide:  # it uses every core: hold every slot until it ends (all free: nothing runs)
                while held < self.limits.max_concurrent_batches:
                    await self._slots.acquire()
                    held += 1
            task = loop.create_task(self._run_and_answer(round_, wide))
            self._running.add(task)
            task.add_done_callback(functools.partial(self._round_finished, held))

    def _round_finished(self, held: int, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        for _ in range(held):
            self._slots.release()
        self._wakeup.set()  # the delay rule depends on whether a round is running

    async def _run_and_answer(self, round_: list[Item], wide: bool) -> None:
        started = time.monotonic()
        copies: dict[int, list[Item]] = {}
        if self._once:
            round_, copies = same_once(round_)
        runs = await self._run(round_, wide, copies)
        self._answer(runs, started, time.monotonic() - started, wide, copies)

    async def _run(
        self, round_: list[Item], wide: bool, copies: dict[int, list[Item]] | None = None
    ) -> list[BatchRun]:
        """Run the round's batches back to back on one worker thread; a batch the runtime fails on
        has rows None, and the others still run."""
        parts = split_by_length(round_, self.limits)
        padded = [pad([item.ids for item in batch]) for batch in parts]
        copies = copies or {}

        def want(item: Item) -> Any:
            """What the row is for: nothing once every caller it answers has gone."""
            waiting = [each for each in (item, *copies.get(id(item), ())) if not each.future.done()]
            return item.want if waiting else None

        wants = [[want(item) for item in batch] for batch in parts]
        run = self._run_fn

        def run_all() -> list[BatchRun]:
            done = []
            for batch, (ids, mask), batch_wants in zip(parts, padded, wants, strict=True):
                began = time.monotonic()
                rows: Sequence[Any] | None
                try:
                    rows = run(ids, mask, batch_wants, wide)
                except Exception:
                    log.exception("the runtime failed on a batch of %d x %d", *ids.shape)
                    rows = None
                done.append(BatchRun(batch, ids, mask, rows, began, time.monotonic() - began))
            return done

        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, run_all)
        except Exception:  # the executor itself (never the model: run_all catches that)
            log.exception("a round of %d texts could not run", len(round_))
            now = time.monotonic()
            return [
                BatchRun(batch, ids, mask, None, now, 0.0)
                for batch, (ids, mask) in zip(parts, padded, strict=True)
            ]

    def _answer(
        self,
        runs: Sequence[BatchRun],
        started: float,
        seconds: float,
        wide: bool,
        copies: dict[int, list[Item]],
    ) -> None:
        """Answer every text of a round that ran: its row, or RuntimeFailure for a failed batch;
        callers that went away are skipped. copies: the texts each run text stood for too."""
        observer = self._observer
        tracing = self._tracing
        for run in runs:
            size, padded_length = run.ids.shape
            tokens = int(run.mask.sum())
            ride = None
            answered = [(item, [item, *copies.get(id(item), ())]) for item in run.items]
            if tracing is not None:
                calls = (each.trace for _, same in answered for each in same)
                facts = BatchFacts(
                    started, run.began, run.seconds, size, padded_length, tokens, wide, run.rows is None
                )
                ride = tracing.batch(calls, facts)
            if run.rows is None:
                for _, same in answered:
                    for item in same:
                        if not item.future.done():
                            item.future.set_exception(
                                RuntimeFailure("the model failed on the batch holding this text; retry")
                            )
                continue
            for (_, same), row in zip(answered, run.rows, strict=True):
                for item in same:
                    if item.future.done():  # the caller went away while the round ran
                        continue
                    waited = started - item.enqueued
                    item.future.set_result(ItemResult(row, waited, seconds, size, padded_length, ride))
                    if observer:
                        observer.queue_wait(waited)
            if observer:
                observer.batch_done(size, padded_length, tokens, run.seconds)
