"""The fair queue: admission, start tags, expiry and round selection, with no threads and no tasks.

Fairness between requests is start-time fair queuing, with tokens as the cost: each text gets a
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

Inside a round, texts are sorted by length and cut into batches (split_by_length) so that little
of each batch is padding; the order of rounds, not of batches, is what callers wait for.

Priorities come before fairness: a request may ask for HIGH (interactive), NORMAL (the default) or
LOW (bulk). A round takes texts of one rank only, the most urgent waiting, and within a rank by
start tag as above. A text's rank rises one step for every priority_aging_s that its priority has
gone without a round (counted from when the text arrived or the priority's last round, whichever is
later), so LOW texts wait at most twice that for a round while more urgent ones take every turn,
and then compete as HIGH, where their early start tags put them first: low priority is never
starved. Aging counts turns, not waiting: a LOW flood that gets rounds all the time (on the workers
the batcher does not keep for HIGH texts) stays LOW however long its queue, and never outranks the
interactive callers. LOW requests may fill only half of the queue, so that a bulk flood leaves room
for the others.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Protocol, TypeVar

from service.core.errors import DeadlineExpired, InvalidInput, NotServing, QueueFull

# a call that ends this close to its deadline ran out of time: the caller's timer fires a little
# before the server's copy of the deadline (which started when the call arrived)
DEADLINE_SLACK_S = 0.25


class Priority(IntEnum):
    """How soon a request's texts want their turn; a smaller value goes first."""

    HIGH = 0  # interactive: a person waits
    NORMAL = 1
    LOW = 2  # bulk: throughput matters, not each call's latency


@dataclass(frozen=True)
class ItemResult:
    """The run function's result for one text, and what the batcher did for it."""

    value: Any
    queue_seconds: float
    compute_seconds: float
    batch_size: int
    padded_length: int
    trace: Any = None  # where the text rode, for its call's spans (service/ops/tracing.Ride); None untraced


@dataclass(eq=False)
class Item:
    """One text waiting for its round."""

    ids: Sequence[int]
    want: Any  # passed to the run function with this text's row
    deadline: float | None  # time.monotonic() after which the caller no longer waits
    future: asyncio.Future[ItemResult]
    enqueued: float = field(default_factory=time.monotonic)
    start: float = 0.0  # fair-queuing tag: the virtual time (in tokens) when this text's turn comes
    trace: Any = None  # the span of a sampled call this text belongs to (service/ops/tracing), else None
    priority: Priority = Priority.NORMAL

    @property
    def length(self) -> int:
        return len(self.ids)

    def rank(self, now: float, aging_s: float, turn: float = -math.inf) -> int:
        """The priority it competes with now: one step more urgent for every aging_s its priority has
        gone without a round since it arrived (turn: when that priority's last round started)."""
        return max(0, int(self.priority) - int((now - max(self.enqueued, turn)) / aging_s))


@dataclass(frozen=True)
class BatchLimits:
    """The batcher's limits; their defaults live in one place, the settings (assembly.batch_limits)."""

    max_batch_size: int
    max_batch_tokens: int
    max_queue_delay_s: float
    max_queue_size: int
    max_concurrent_batches: int
    max_padding_ratio: float  # most of a batch's padded tokens that may be padding
    # a round that starts with nothing running and nothing left waiting runs wide (every core), and
    # no other round starts until it ends: a wide batch beside a narrow one oversubscribes the cores
    # and its threads wait for each other
    wide_when_alone: bool
    priority_aging_s: float  # a waiting text's priority rises one step each time this passes


class QueueObserver(Protocol):
    """Receives what the queue does, for metrics."""

    def dropped(self, reason: str, count: int) -> None: ...

    def queue_depth(self, depth: int) -> None: ...


def select_round(
    pending: Sequence[Item],
    limits: BatchLimits,
    now: float | None = None,
    turns: Mapping[Priority, float] | None = None,
) -> list[Item]:
    """The next round: texts of the most urgent rank waiting (Item.rank at `now`, given when each
    priority's last round started: `turns`), those whose turn it is (the smallest start tags, then
    the oldest), up to max_batch_size texts and max_batch_tokens real tokens; always at least one."""
    now = time.monotonic() if now is None else now
    aging_s, turns = limits.priority_aging_s, turns or {}
    ranked = sorted(
        ((item.rank(now, aging_s, turns.get(item.priority, -math.inf)), item.start, item.enqueued, item)
         for item in pending),
        key=lambda entry: entry[:3],
    )  # fmt: skip
    chosen: list[Item] = []
    tokens = 0
    for rank, _, _, item in ranked:
        full = len(chosen) == limits.max_batch_size or tokens + item.length > limits.max_batch_tokens
        if chosen and (full or rank != ranked[0][0]):
            break
        chosen.append(item)
        tokens += item.length
    return chosen


class Sized(Protocol):
    """A text as the batch split sees it: its length in tokens."""

    @property
    def length(self) -> int: ...


SizedT = TypeVar("SizedT", bound=Sized)


class SplitLimits(Protocol):
    """The limits that cut a set of texts into batches (BatchLimits; the bulk path's own)."""

    @property
    def max_batch_size(self) -> int: ...

    @property
    def max_batch_tokens(self) -> int: ...

    @property
    def max_padding_ratio(self) -> float: ...


def split_by_length(texts: Sequence[SizedT], limits: SplitLimits) -> list[list[SizedT]]:
    """The texts' batches, shortest first: each takes the next texts in length order while it stays
    within max_batch_size texts, max_batch_tokens padded tokens and max_padding_ratio padding."""
    out: list[list[SizedT]] = []
    batch: list[SizedT] = []
    real = 0
    for text in sorted(texts, key=lambda text: text.length):
        padded = text.length * (len(batch) + 1)  # sorted: the newcomer is the longest
        if batch and (
            len(batch) == limits.max_batch_size
            or padded > limits.max_batch_tokens
            or 1 - (real + text.length) / padded > limits.max_padding_ratio
        ):
            out.append(batch)
            batch, real = [], 0
        batch.append(text)
        real += text.length
    if batch:
        out.append(batch)
    return out


def share(round_: Sequence[Item], workers: int) -> list[list[Item]]:
    """The round cut, in length order, into up to `workers` rounds of about as many texts each."""
    ordered = sorted(round_, key=lambda item: item.length)
    size = -(-len(ordered) // workers)
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


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


class FairQueue:
    """The bounded queue of texts, in arrival order, and the virtual time of fair queuing."""

    def __init__(self, limits: BatchLimits, observer: QueueObserver | None = None) -> None:
        self.limits = limits
        self._observer = observer
        self._pending: list[Item] = []  # arrival order
        self._virtual = 0.0  # the largest start tag taken so far
        self._turns: dict[Priority, float] = {}  # when each priority's last round started
        self.closed = False

    def __len__(self) -> int:
        return len(self._pending)

    def close(self) -> None:
        """Admit nothing more; what is queued stays to be taken."""
        self.closed = True

    def admit(self, count: int, priority: Priority = Priority.NORMAL) -> None:
        """Raise unless a request of `count` texts may be queued now: the one admission check.

        NotServing once closed; InvalidInput for a request that could never fit the queue (retrying
        it cannot help); QueueFull, counted as dropped, when it does not fit now (retry later). A LOW
        request fits only within half of the queue (or an empty queue): the rest is kept for the
        others."""
        if self.closed:
            raise NotServing("the server is shutting down; retry (another replica)")
        limit = self.limits.max_queue_size
        if count > limit:
            raise InvalidInput(
                f"the request has {count} texts and the queue holds at most {limit}: it can never be "
                "taken; send fewer texts per request"
            )
        waiting = len(self._pending)
        room = limit // 2 if priority is Priority.LOW and waiting else limit
        if waiting + count > room:
            if self._observer:
                self._observer.dropped("queue_full", count)
            share = " (low priority may fill half of it)" if room < limit else ""
            raise QueueFull(
                f"the queue holds {waiting} texts and this request adds {count}; the limit is {limit}"
                f"{share}: retry later"
            )

    def push(
        self,
        sequences: Sequence[Sequence[int]],
        want: Any,
        deadline: float | None,
        trace: Any = None,
        priority: Priority = Priority.NORMAL,
    ) -> list[asyncio.Future[ItemResult]]:
        """Queue every sequence of one request with its start tags, or none (admit raises); trace:
        the request's span when it is traced."""
        self.admit(len(sequences), priority)
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        futures: list[asyncio.Future[ItemResult]] = []
        start = self._virtual
        for ids in sequences:
            future: asyncio.Future[ItemResult] = loop.create_future()
            self._pending.append(Item(ids, want, deadline, future, now, start, trace, priority))
            futures.append(future)
            start += len(ids)
        self._report_depth()
        return futures

    def drop_gone(self) -> None:
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

    def seconds_until_round(self, busy: bool) -> float:
        """How long the next round may still wait for company: 0 when it should close now (the
        queue is closing, holds a full round, or the runtime is idle (`busy` false): waiting only
        pays off while a round runs), else what is left of the oldest text's max_queue_delay.
        The queue must not be empty."""
        limits = self.limits
        if self.closed or not busy or len(self._pending) >= limits.max_batch_size:
            return 0.0
        if sum(item.length for item in self._pending) >= limits.max_batch_tokens:
            return 0.0
        waited = time.monotonic() - self._pending[0].enqueued
        return max(0.0, limits.max_queue_delay_s - waited)

    def head_rank(self, now: float) -> int:
        """The most urgent rank waiting; the queue must not be empty."""
        aging_s, turns = self.limits.priority_aging_s, self._turns
        return min(item.rank(now, aging_s, turns.get(item.priority, -math.inf)) for item in self._pending)

    def take_round(self) -> list[Item]:
        """Remove and return the next round (select_round); the virtual time moves past it, and the
        priorities it serves had their turn."""
        now = time.monotonic()
        round_ = select_round(self._pending, self.limits, now, self._turns)
        for item in round_:
            self._turns[item.priority] = now
        self._virtual = max(self._virtual, max(item.start for item in round_))
        chosen = set(map(id, round_))
        self._pending = [item for item in self._pending if id(item) not in chosen]
        self._report_depth()
        return round_

    def _report_depth(self) -> None:
        if self._observer:
            self._observer.queue_depth(len(self._pending))
