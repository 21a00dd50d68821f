"""The batching loop against a fake runtime that records every batch it is given.

The fake never sleeps: a test holds a given run on an event and waits, with a bounded poll, for what
it needs to have happened; "nothing happened" is checked once the event loop has had every chance to
act (the batcher's decisions are pure asyncio, no thread is involved in them).
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING

import pytest
import pytest_asyncio

from service.core.batcher import Batcher
from service.core.errors import DeadlineExpired, InvalidInput, NotServing, QueueFull, RuntimeFailure
from service.core.fair_queue import Priority
from service.core.slots import QUIET_ROUNDS
from service.ops.settings import Settings
from service.versions.assembly import batch_limits

if TYPE_CHECKING:
    from service.core.fair_queue import BatchLimits

WAIT_S = 30  # bounded waits: only a hang reaches them


class FakeRuntime:
    """result[row] = (sum of the row's ids, real length, the row's want). Run n (from 0) waits for
    the event hold(n) returned, and fails when n is in fail_runs."""

    def __init__(self) -> None:
        self.started = 0
        self.batches: list[tuple[int, int]] = []  # (size, padded length) of each run, once it ran
        self.wide: list[bool] = []  # of each run, as it starts
        self.fail_runs: set[int] = set()
        self._holds: dict[int, threading.Event] = {}
        self._lock = threading.Lock()

    def hold(self, run: int) -> threading.Event:
        """The event that run number `run` waits for before it computes; set it to let it go."""
        self._holds[run] = threading.Event()
        return self._holds[run]

    def __call__(self, ids, mask, wants, wide):
        with self._lock:
            index = self.started
            self.started += 1
            self.wide.append(wide)
        hold = self._holds.get(index)
        if hold is not None:
            assert hold.wait(WAIT_S), f"run {index} was held and never let go"
        self.batches.append(ids.shape)
        if index in self.fail_runs:
            raise RuntimeError("boom")
        return list(zip(ids.sum(1).tolist(), mask.sum(1).tolist(), wants, strict=True))


def limits_of(**overrides) -> BatchLimits:
    """The server's default limits (2 batches at once), with some changed."""
    defaults = batch_limits(Settings(), max_length=64, concurrent_batches=2, wide_when_alone=True)
    return dataclasses.replace(defaults, **overrides)


async def until(condition: Callable[[], bool]) -> None:
    """Wait for a condition that another thread makes true; fails the test after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "the condition never became true"
        await asyncio.sleep(0.001)


async def settled() -> None:
    """Give the event loop every chance to act on what was just submitted."""
    for _ in range(50):
        await asyncio.sleep(0)


@pytest_asyncio.fixture(loop_scope="function")
async def make() -> AsyncIterator[Callable[..., tuple[Batcher, FakeRuntime]]]:
    """Started batchers over fresh fake runtimes; every one is stopped, even when the test fails."""
    made: list[tuple[Batcher, FakeRuntime]] = []

    def start(**limits) -> tuple[Batcher, FakeRuntime]:
        runtime = FakeRuntime()
        batcher = Batcher(runtime, limits_of(**limits))
        batcher.start()
        made.append((batcher, runtime))
        return batcher, runtime

    yield start
    for batcher, runtime in made:
        for hold in runtime._holds.values():
            hold.set()
        await asyncio.wait_for(batcher.stop(), WAIT_S)


async def test_results_go_back_to_their_own_items(make) -> None:
    batcher, _ = make(max_concurrent_batches=1, max_padding_ratio=1.0)
    sequences = [[3] * 5, [1, 2], [7] * 9, [4]]
    results = await asyncio.gather(*batcher.submit(sequences, "mine", None))
    for seq, result in zip(sequences, results, strict=True):
        assert result.value == (sum(seq), len(seq), "mine")
        assert result.batch_size == 4 and result.padded_length == 9


async def test_idle_workers_share_the_queue_by_length(make) -> None:
    batcher, runtime = make(max_concurrent_batches=2, max_queue_delay_s=3600.0)
    results = await asyncio.gather(*batcher.submit([[1] * 9, [2], [3] * 8, [4]], False, None))
    assert sorted(runtime.batches) == [(2, 1), (2, 9)]  # short with short, long with long, at once
    assert [r.batch_size for r in results] == [2, 2, 2, 2]


async def test_quiet_server_runs_at_once_and_busy_server_batches(make) -> None:
    batcher, runtime = make(max_queue_delay_s=3600.0, max_concurrent_batches=1, max_padding_ratio=1.0)
    # nothing else running: it runs at once instead of waiting out the hour of delay
    await asyncio.wait_for(asyncio.gather(*batcher.submit([[1, 2]], False, None)), WAIT_S)
    release = runtime.hold(1)
    first = batcher.submit([[1]], False, None)
    await until(lambda: runtime.started == 2)  # the first batch is running; these queue behind it
    rest = [batcher.submit([[i] * (i + 1)], False, None)[0] for i in range(10)]
    release.set()
    await asyncio.gather(*first, *rest)
    assert [shape[0] for shape in runtime.batches] == [1, 1, 10]


async def test_delay_closes_a_round_while_another_runs(make) -> None:
    # without a wide session (a GPU, or one thread asked for) a lone batch leaves the other slot free
    batcher, runtime = make(max_queue_delay_s=0.2, max_concurrent_batches=2, wide_when_alone=False)
    first_may_end = runtime.hold(0)  # the first batch runs until the end of the test
    blocked = batcher.submit([[1]], None, None)  # runs at once: nothing else was running
    await until(lambda: runtime.started == 1)
    waiting = batcher.submit([[2], [3]], None, None)
    await settled()
    # a round is running and more texts may come: these wait for the delay, not for the first round
    assert batcher.depth == 2
    await asyncio.wait_for(asyncio.gather(*waiting), WAIT_S)
    assert runtime.batches == [(2, 1)] and not blocked[0].done()  # ran beside the first round
    first_may_end.set()
    await asyncio.gather(*blocked)


async def test_full_queue_refuses_at_once_and_keeps_accepted_items(make) -> None:
    batcher, runtime = make(max_queue_size=3, max_concurrent_batches=1)
    release = runtime.hold(0)
    running = batcher.submit([[1]], False, None)
    await until(lambda: runtime.started == 1)
    queued = batcher.submit([[2], [3]], False, None)
    with pytest.raises(QueueFull, match="the limit is 3"):
        batcher.submit([[4], [5]], False, None)
    assert batcher.depth == 2
    release.set()
    results = await asyncio.gather(*running, *queued)
    assert [r.value[0] for r in results] == [1, 2, 3]


async def test_cancelled_and_expired_items_are_not_computed(make) -> None:
    batcher, runtime = make(max_concurrent_batches=1)
    release = runtime.hold(0)
    running = batcher.submit([[1]], False, None)
    await until(lambda: runtime.started == 1)
    cancelled = batcher.submit([[5] * 7], False, None)
    expired = batcher.submit([[6] * 8], False, time.monotonic() - 1)  # its deadline has passed
    kept = batcher.submit([[7] * 3], False, None)
    cancelled[0].cancel()
    release.set()
    await asyncio.gather(*running, *kept)
    with pytest.raises(DeadlineExpired):
        await expired[0]
    assert runtime.batches == [(1, 1), (1, 3)]


async def test_runtime_failure_fails_only_its_batch(make) -> None:
    batcher, runtime = make()
    runtime.fail_runs.add(0)
    with pytest.raises(RuntimeFailure):
        await asyncio.gather(*batcher.submit([[1], [2]], False, None))
    result = await batcher.submit([[3]], False, None)[0]
    assert result.value[0] == 3


async def test_a_later_small_request_does_not_wait_behind_a_large_one(make) -> None:
    batcher, runtime = make(max_batch_size=8, max_concurrent_batches=1)
    release = runtime.hold(0)
    large = batcher.submit([[1] * 10] * 40, "large", None)  # its first 8 texts start running at once
    await until(lambda: runtime.started == 1)
    small = batcher.submit([[2] * 3], "small", None)
    release.set()
    await asyncio.gather(*large, *small)
    # the small request's turn came in the round right after the one running when it arrived (its
    # own batch, by length, then 7 more of the large request's texts), not after the 32 texts of
    # the large request still queued ahead of it
    assert runtime.batches[:3] == [(8, 10), (1, 3), (7, 10)]
    assert sum(size for size, _ in runtime.batches) == 41


async def test_each_batch_of_a_round_is_answered_as_it_ends(make) -> None:
    """A short text that shares its round with a long one does not wait for the long text's batch:
    a light caller beside a heavy request waits for about one batch, not one round."""
    batcher, runtime = make(max_concurrent_batches=1)
    second_may_run = runtime.hold(1)  # the round's second batch (the long text) waits
    short, long = batcher.submit([[1] * 2, [2] * 40], None, None)
    answer = await asyncio.wait_for(short, WAIT_S)  # answered before the long batch may run
    await until(lambda: runtime.started == 2)
    assert runtime.batches == [(1, 2)] and not long.done()
    assert (answer.batch_size, answer.padded_length) == (1, 2)
    second_may_run.set()
    late = await long
    assert runtime.batches == [(1, 2), (1, 40)]
    assert (late.batch_size, late.padded_length) == (1, 40)
    # each counts its compute from the round's start to the end of its own batch
    assert late.compute_seconds > answer.compute_seconds


async def test_a_failing_batch_fails_only_its_texts_not_the_rest_of_its_round(make) -> None:
    batcher, runtime = make(max_concurrent_batches=1)
    runtime.fail_runs.add(0)  # the round's first batch: the short texts
    futures = batcher.submit([[1] * 2, [2] * 2, [3] * 30], None, None)
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    assert [type(o) for o in outcomes[:2]] == [RuntimeFailure, RuntimeFailure]
    assert outcomes[2].value[0] == 90


async def test_a_request_larger_than_the_queue_is_invalid_not_retryable(make) -> None:
    batcher, _ = make(max_queue_size=4)
    with pytest.raises(InvalidInput, match="the request has 5 texts and the queue holds at most 4"):
        batcher.submit([[1]] * 5, None, None)
    assert batcher.depth == 0


async def test_stop_answers_everything_accepted_then_refuses() -> None:
    batcher = Batcher(FakeRuntime(), limits_of(max_batch_size=4))
    batcher.start()
    futures = [f for i in range(20) for f in batcher.submit([[i + 1]], False, None)]
    await asyncio.wait_for(batcher.stop(), WAIT_S)
    assert all(f.done() and not f.exception() for f in futures)
    assert sorted(f.result().value[0] for f in futures) == list(range(1, 21))
    with pytest.raises(NotServing):
        batcher.submit([[1]], False, None)


async def test_a_stream_of_short_texts_does_not_starve_a_long_one(make) -> None:
    """The tail bound: later texts never take an earlier text's turn, so a text runs once the texts
    queued before it have run, however well the later ones batch together."""
    batcher, runtime = make(max_batch_size=4, max_concurrent_batches=1, max_padding_ratio=0.1)
    steps = [runtime.hold(n) for n in range(40)]  # one batch per step
    first = batcher.submit([[1] * 5], None, None)  # runs at once: nothing else was running
    await until(lambda: runtime.started == 1)
    ahead = [f for _ in range(6) for f in batcher.submit([[1] * 5], None, None)]
    long = batcher.submit([[2] * 60], None, None)
    stream = []
    for step in steps[:12]:  # a short text keeps arriving, and batches well with the others
        stream += batcher.submit([[1] * 5], None, None)
        ran = len(runtime.batches)
        step.set()
        await until(lambda ran=ran: len(runtime.batches) > ran)
        await settled()
        if long[0].done():
            break
    # the six texts ahead of it took two rounds (4, then 2 with it): it ran in the second
    assert long[0].done()
    assert runtime.batches.index((1, 60)) == 3
    for step in steps:
        step.set()
    await asyncio.gather(*first, *ahead, *long, *stream)


async def test_a_lone_batch_on_a_quiet_server_runs_wide_and_nothing_starts_beside_it(make) -> None:
    batcher, runtime = make(max_queue_delay_s=0.0)
    for n in range(QUIET_ROUNDS + 1):  # one caller at a time: the server turns quiet
        await batcher.submit([[n + 1]], None, None)[0]
    assert runtime.wide == [False] * QUIET_ROUNDS + [True]
    release = runtime.hold(QUIET_ROUNDS + 1)
    first = batcher.submit([[3]], None, None)
    await until(lambda: runtime.started == QUIET_ROUNDS + 2)
    second = batcher.submit([[4]], None, None)  # arrives while the wide batch runs: it must wait
    await settled()
    assert runtime.wide[-1] is True and batcher.depth == 1
    release.set()
    await asyncio.gather(*first, *second)
    # each found nothing running and nothing waiting, but the second arrived while the wide round
    # ran: the lone round after that runs narrow, leaving a core to whatever arrives meanwhile
    assert runtime.wide[-2:] == [True, False]
    # with work waiting, the round is shared and its parts run narrow, side by side
    await asyncio.gather(*batcher.submit([[5] * 4, [6] * 4, [7] * 9, [8] * 9], None, None))
    assert runtime.wide[-2:] == [False, False]


async def test_identical_texts_in_one_round_run_once_and_each_caller_is_answered() -> None:
    runtime = FakeRuntime()
    batcher = Batcher(runtime, limits_of(max_concurrent_batches=1), once=True)
    batcher.start()
    try:
        gate = runtime.hold(0)
        first = batcher.submit([[1, 5, 2]], "none", None)  # runs at once, held
        await until(lambda: runtime.started == 1)
        # meanwhile three callers queue the same text: two asking the same, one asking more
        same = batcher.submit([[1, 7, 2]], "none", None) + batcher.submit([[1, 7, 2]], "none", None)
        more = batcher.submit([[1, 7, 2]], "summary", None)
        gate.set()
        results = await asyncio.wait_for(asyncio.gather(*first, *same, *more), WAIT_S)
        assert runtime.batches[1] == (2, 3)  # a round of three texts ran two rows
        assert results[1].value == results[2].value == (10, 3, "none")
        assert results[3].value == (10, 3, "summary")
    finally:
        await asyncio.wait_for(batcher.stop(), WAIT_S)


async def test_lone_rounds_that_others_keep_joining_stay_narrow(make) -> None:
    """Arrivals that keep landing while a lone round runs (light load, not one caller) would wait
    for a whole wide round: such rounds stay narrow, however many start with nothing else waiting."""
    batcher, runtime = make(max_queue_delay_s=0.0)
    for n in range(3 * QUIET_ROUNDS):
        release = runtime.hold(2 * n)
        first = batcher.submit([[n + 1]], None, None)
        await until(lambda n=n: runtime.started == 2 * n + 1)  # it runs, alone
        second = batcher.submit([[n + 2]], None, None)  # and another text arrives meanwhile
        release.set()
        await asyncio.gather(*first, *second)
    assert runtime.started == 6 * QUIET_ROUNDS and not any(runtime.wide)
    # once nothing joins its rounds, a lone caller gets every core again
    for n in range(QUIET_ROUNDS + 1):
        await batcher.submit([[n + 1]], None, None)[0]
    assert runtime.wide[-1] is True


async def test_a_worker_is_kept_for_high_texts_while_a_low_flood_runs(make) -> None:
    batcher, runtime = make(max_batch_size=4, max_concurrent_batches=2, max_queue_delay_s=0.0)
    await batcher.submit([[9]], "high", None, priority=Priority.HIGH)[0]  # an interactive caller is here
    first_low = runtime.hold(1)
    flood = batcher.submit([[1] * 5] * 40, "low", None, priority=Priority.LOW)
    await until(lambda: runtime.started == 2)
    await settled()
    # one low round runs; the other worker is kept, so the rest of the flood waits for this one
    assert runtime.started == 2 and batcher.depth == 36
    high = batcher.submit([[2] * 3], "high", None, priority=Priority.HIGH)
    result = await asyncio.wait_for(high[0], WAIT_S)  # ran on the kept worker: the low round still holds
    assert result.value == (6, 3, "high") and not first_low.is_set() and runtime.started == 3
    first_low.set()
    await asyncio.gather(*flood)
    assert not any(runtime.wide[1:])  # nothing ran wide while the worker was kept


async def test_low_texts_run_at_full_width_when_no_one_interactive_is_here(make) -> None:
    batcher, runtime = make(max_batch_size=4, max_concurrent_batches=2, max_queue_delay_s=0.0)
    first_low = runtime.hold(0)
    flood = batcher.submit([[1] * 5] * 12, "low", None, priority=Priority.LOW)
    # both workers take low rounds, none kept: a second run starts while the first is held (the free
    # worker may run on through later rounds before this coroutine looks: at least 2, not exactly)
    await until(lambda: runtime.started >= 2)
    first_low.set()
    await asyncio.gather(*flood)


async def test_stop_runs_the_low_texts_left_on_every_worker(make, monkeypatch) -> None:
    monkeypatch.setattr("service.core.slots.KEEP_FOR_HIGH_S", 3600.0)  # kept for the whole test
    batcher, runtime = make(max_batch_size=4, max_concurrent_batches=2, max_queue_delay_s=0.0)
    await batcher.submit([[9]], "high", None, priority=Priority.HIGH)[0]
    first_low = runtime.hold(1)
    flood = batcher.submit([[1] * 5] * 20, "low", None, priority=Priority.LOW)
    await until(lambda: runtime.started == 2)
    stopping = asyncio.ensure_future(batcher.stop())
    # closing: the worker kept for interactive callers takes the low texts too
    await until(lambda: runtime.started >= 3)
    first_low.set()
    await asyncio.wait_for(stopping, WAIT_S)
    assert all(future.done() and not future.exception() for future in flood)
