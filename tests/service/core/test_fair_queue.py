"""The fair queue alone, no threads and no batcher task: admission, start tags, expiry, rounds."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest

from service.core.errors import DeadlineExpired, InvalidInput, NotServing, QueueFull
from service.core.fair_queue import (
    BatchLimits,
    FairQueue,
    Item,
    Priority,
    select_round,
    share,
    split_by_length,
)
from service.ops.settings import Settings
from service.versions.assembly import batch_limits


def limits_of(**overrides) -> BatchLimits:
    """The server's default limits (2 batches at once), with some changed."""
    defaults = batch_limits(Settings(), max_length=64, concurrent_batches=2, wide_when_alone=True)
    return dataclasses.replace(defaults, **overrides)


def item(length: int, age: float = 0.0, start: float = 0.0) -> Item:
    """A queue item; call it from a coroutine: its future belongs to the running loop."""
    future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    return Item([1] * length, None, None, future, time.monotonic() - age, start)


class Recorder:
    """A QueueObserver that keeps what it was told."""

    def __init__(self) -> None:
        self.drops: list[tuple[str, int]] = []
        self.depths: list[int] = []

    def dropped(self, reason: str, count: int) -> None:
        self.drops.append((reason, count))

    def queue_depth(self, depth: int) -> None:
        self.depths.append(depth)


async def test_select_takes_the_texts_whose_turn_it_is_whatever_their_length() -> None:
    pending = [item(n, start=tag) for n, tag in ((50, 3.0), (9, 1.0), (100, 0.0), (8, 9.0), (11, 2.0))]
    chosen = select_round(pending, limits_of(max_batch_size=4, max_batch_tokens=10_000))
    assert [i.length for i in chosen] == [100, 9, 11, 50]  # start-tag order, not neighbours in length


async def test_select_stops_at_the_token_budget_but_always_takes_one() -> None:
    pending = [item(n, start=tag) for tag, n in enumerate((10, 10, 10, 15, 1))]
    assert [i.length for i in select_round(pending, limits_of(max_batch_tokens=40))] == [10, 10, 10]
    assert [i.length for i in select_round([item(90), item(5)], limits_of(max_batch_tokens=40))] == [90]


async def test_select_seeds_with_the_smallest_start_tag_then_the_oldest() -> None:
    late_turn = item(10, age=1.0, start=500.0)
    first_turn = item(3, age=0.0, start=0.0)
    tie_older = item(20, age=0.5, start=0.0)
    limits = limits_of(max_batch_size=1)
    assert select_round([late_turn, first_turn, tie_older], limits) == [tie_older]
    assert select_round([late_turn, first_turn], limits) == [first_turn]


async def test_a_round_splits_into_batches_of_similar_length_within_the_padding_limit() -> None:
    round_ = [item(n) for n in (30, 10, 2, 11, 31, 9, 3)]
    parts = split_by_length(round_, limits_of(max_padding_ratio=0.2, max_batch_tokens=1000))
    assert [[i.length for i in b] for b in parts] == [[2, 3], [9, 10, 11], [30, 31]]
    assert len(split_by_length(round_, limits_of(max_padding_ratio=1.0, max_batch_tokens=1000))) == 1
    capped = split_by_length(
        [item(10) for _ in range(5)], limits_of(max_padding_ratio=1.0, max_batch_tokens=20)
    )
    assert [len(b) for b in capped] == [2, 2, 1]  # padded tokens per batch stay within the budget


async def test_share_cuts_a_round_by_length_into_parts_of_as_many_texts() -> None:
    parts = share([item(n) for n in (9, 1, 8, 2, 5)], 2)
    assert [[i.length for i in p] for p in parts] == [[1, 2, 5], [8, 9]]
    assert [[i.length for i in p] for p in share([item(4)], 2)] == [[4]]


async def test_admission_refuses_with_the_reason_a_caller_can_act_on() -> None:
    observer = Recorder()
    queue = FairQueue(limits_of(max_queue_size=4), observer)
    with pytest.raises(InvalidInput, match="the request has 5 texts and the queue holds at most 4"):
        queue.push([[1]] * 5, None, None)
    queue.push([[1]] * 3, None, None)
    with pytest.raises(QueueFull, match="the queue holds 3 texts and this request adds 2; the limit is 4"):
        queue.admit(2)
    queue.admit(1)  # still fits: admit takes nothing
    assert len(queue) == 3 and observer.drops == [("queue_full", 2)]
    queue.close()
    with pytest.raises(NotServing):
        queue.admit(1)
    assert len(queue) == 3  # closing keeps what was accepted


async def test_a_requests_texts_start_one_after_another_and_a_later_request_at_the_virtual_time() -> None:
    queue = FairQueue(limits_of(max_batch_size=2))
    queue.push([[1] * 10, [1] * 10, [1] * 10], "large", None)
    queue.push([[2] * 3], "small", None)
    first = queue.take_round()
    # the large request's second text starts after its first's 10 tokens; the small request starts
    # at the virtual time (0) like the large one's first text, so it is in the first round
    assert [(i.want, i.start) for i in first] == [("large", 0.0), ("small", 0.0)]
    queue.push([[3] * 4], "later", None)  # the virtual time is still 0: before the large one's 10
    assert [(i.want, i.start) for i in queue.take_round()] == [("later", 0.0), ("large", 10.0)]
    queue.push([[4] * 4], "last", None)  # the virtual time is 10 now: before the large one's 20
    assert [(i.want, i.start) for i in queue.take_round()] == [("last", 10.0), ("large", 20.0)]
    assert len(queue) == 0


async def test_gone_callers_are_forgotten_and_expired_ones_failed_and_counted() -> None:
    observer = Recorder()
    queue = FairQueue(limits_of(), observer)
    (cancelled,) = queue.push([[1] * 5], None, None)
    (expired,) = queue.push([[2] * 5], None, time.monotonic() - 1)
    (kept,) = queue.push([[3] * 5], None, time.monotonic() + 3600)
    cancelled.cancel()
    queue.drop_gone()
    assert len(queue) == 1 and not kept.done()
    with pytest.raises(DeadlineExpired, match="the deadline passed"):
        expired.result()
    assert sorted(observer.drops) == [("cancelled", 1), ("deadline", 1)]
    assert [i.future for i in queue.take_round()] == [kept]


async def test_a_round_waits_for_company_only_while_the_runtime_is_busy() -> None:
    queue = FairQueue(limits_of(max_queue_delay_s=3600.0, max_batch_size=3, max_batch_tokens=100))
    queue.push([[1] * 5], None, None)
    assert queue.seconds_until_round(busy=False) == 0.0  # idle runtime: run now
    assert 3500 < queue.seconds_until_round(busy=True) <= 3600  # busy: the delay is left
    queue.push([[1] * 5, [1] * 5], None, None)
    assert queue.seconds_until_round(busy=True) == 0.0  # a full round
    queue.take_round()
    queue.push([[1] * 100], None, None)
    assert queue.seconds_until_round(busy=True) == 0.0  # the token budget is full
    queue.take_round()
    queue.push([[1] * 5], None, None)
    queue.close()
    assert queue.seconds_until_round(busy=True) == 0.0  # closing: no more company comes


def ranked(length: int, priority: Priority, age: float = 0.0, start: float = 0.0) -> Item:
    made = item(length, age, start)
    made.priority = priority
    return made


async def test_a_round_takes_the_most_urgent_rank_only_then_by_turn() -> None:
    limits = limits_of(max_batch_size=8, priority_aging_s=10.0)
    low_early = ranked(5, Priority.LOW, start=0.0)
    normal = ranked(6, Priority.NORMAL, start=5.0)
    high_late = [ranked(7, Priority.HIGH, start=50.0), ranked(8, Priority.HIGH, start=40.0)]
    chosen = select_round([low_early, normal, *high_late], limits)
    assert chosen == [high_late[1], high_late[0]]  # HIGH first, by start tag; nothing less urgent rides
    assert select_round([low_early, normal], limits) == [normal]


async def test_a_waiting_text_rises_a_rank_each_aging_period_so_low_is_never_starved() -> None:
    limits = limits_of(max_batch_size=1, priority_aging_s=1.0)
    now = time.monotonic()
    patient = ranked(5, Priority.LOW, age=2.5, start=0.0)  # waited two periods and more: HIGH now
    fresh_high = ranked(5, Priority.HIGH, start=100.0)
    assert patient.rank(now, 1.0) == Priority.HIGH and ranked(5, Priority.LOW, age=1.2).rank(now, 1.0) == 1
    assert select_round([fresh_high, patient], limits, now) == [patient]  # its earlier turn wins


async def test_low_priority_fills_only_half_of_the_queue() -> None:
    recorder = Recorder()
    queue = FairQueue(limits_of(max_queue_size=8), recorder)
    queue.push([[1]] * 3, None, None, priority=Priority.LOW)  # an empty queue takes any request
    queue.push([[1]], None, None, priority=Priority.LOW)  # 4 of 8: still within half
    with pytest.raises(QueueFull, match="low priority may fill half"):
        queue.push([[1]], None, None, priority=Priority.LOW)
    queue.push([[1]] * 4, None, None, priority=Priority.HIGH)  # the other half is the others'
    assert len(queue) == 8 and recorder.drops == [("queue_full", 1)]


async def test_aging_counts_turns_missed_so_a_low_flood_being_served_stays_low() -> None:
    queue = FairQueue(limits_of(max_batch_size=1, priority_aging_s=1.0))
    queue.push([[1]] * 3, None, None, priority=Priority.LOW)
    for waiting in queue._pending:
        waiting.enqueued -= 10.0  # queued ten aging periods ago: a long bulk backlog
    assert queue.take_round()[0].priority is Priority.LOW  # nothing else waits
    queue.push([[2]], None, None, priority=Priority.HIGH)
    # LOW had its turn just now: its old texts do not outrank the interactive one
    assert queue.take_round()[0].priority is Priority.HIGH
