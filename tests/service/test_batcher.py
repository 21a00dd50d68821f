"""The dynamic batcher against a fake runtime that records every batch it is given."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time

import numpy as np
import pytest

from service.batcher import QUIET_ROUNDS, Batcher, BatchLimits, Item, batches, pad, select, share
from service.config import Settings
from service.engine import batch_limits
from service.errors import DeadlineExpired, InvalidInput, NotServing, QueueFull, RuntimeFailure


class FakeRuntime:
    """result[row] = (sum of the row's ids, real length, the row's want); optional pause and failure."""

    def __init__(self, pause_s: float = 0.0) -> None:
        self.batches: list[tuple[int, int]] = []
        self.wide: list[bool] = []
        self.pause_s = pause_s
        self.fail_next = False
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, ids, mask, wants, wide):
        self.gate.wait(5)
        self.wide.append(wide)
        if self.pause_s:
            time.sleep(self.pause_s)
        self.batches.append(ids.shape)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("boom")
        return list(zip(ids.sum(1).tolist(), mask.sum(1).tolist(), wants, strict=True))


def limits_of(**overrides) -> BatchLimits:
    """The server's default limits (2 batches at once), with some changed."""
    defaults = batch_limits(Settings(), max_length=64, concurrent_batches=2, wide_when_alone=True)
    return dataclasses.replace(defaults, **overrides)


def item(length: int, age: float = 0.0, start: float = 0.0) -> Item:
    """A queue item; call it from a coroutine: its future belongs to the running loop."""
    future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    return Item([1] * length, None, None, future, time.monotonic() - age, start)


async def test_select_takes_the_texts_whose_turn_it_is_whatever_their_length() -> None:
    pending = [item(n, start=tag) for n, tag in ((50, 3.0), (9, 1.0), (100, 0.0), (8, 9.0), (11, 2.0))]
    chosen = select(pending, limits_of(max_batch_size=4, max_batch_tokens=10_000))
    assert [i.length for i in chosen] == [100, 9, 11, 50]  # start-tag order, not neighbours in length


async def test_select_stops_at_the_token_budget_but_always_takes_one() -> None:
    pending = [item(n, start=tag) for tag, n in enumerate((10, 10, 10, 15, 1))]
    assert [i.length for i in select(pending, limits_of(max_batch_tokens=40))] == [10, 10, 10]
    assert [i.length for i in select([item(90), item(5)], limits_of(max_batch_tokens=40))] == [90]


async def test_a_round_runs_as_batches_of_similar_length_within_the_padding_limit() -> None:
    round_ = [item(n) for n in (30, 10, 2, 11, 31, 9, 3)]
    parts = batches(round_, limits_of(max_padding_ratio=0.2, max_batch_tokens=1000))
    assert [[i.length for i in b] for b in parts] == [[2, 3], [9, 10, 11], [30, 31]]
    assert len(batches(round_, limits_of(max_padding_ratio=1.0, max_batch_tokens=1000))) == 1
    capped = batches([item(10) for _ in range(5)], limits_of(max_padding_ratio=1.0, max_batch_tokens=20))
    assert [len(b) for b in capped] == [2, 2, 1]  # padded tokens per batch stay within the budget


async def test_share_cuts_a_round_by_length_into_parts_of_as_many_texts() -> None:
    parts = share([item(n) for n in (9, 1, 8, 2, 5)], 2)
    assert [[i.length for i in p] for p in parts] == [[1, 2, 5], [8, 9]]
    assert [[i.length for i in p] for p in share([item(4)], 2)] == [[4]]


async def test_pad_builds_mask_from_real_lengths() -> None:
    ids, mask = pad([item(2), item(4)])
    assert ids.shape == (2, 4) and ids.dtype == np.int64
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
    assert ids[0, 2:].tolist() == [0, 0]


async def started(runtime: FakeRuntime, **limits) -> Batcher:
    batcher = Batcher(runtime, limits_of(**limits))
    batcher.start()
    return batcher


async def test_results_go_back_to_their_own_items() -> None:
    runtime = FakeRuntime()
    batcher = await started(runtime, max_concurrent_batches=1, max_padding_ratio=1.0)
    sequences = [[3] * 5, [1, 2], [7] * 9, [4]]
    results = await asyncio.gather(*batcher.submit(sequences, "mine", None))
    for seq, result in zip(sequences, results, strict=True):
        assert result.value == (sum(seq), len(seq), "mine")
        assert result.batch_size == 4 and result.padded_length == 9
    await batcher.stop()


async def test_idle_workers_share_the_queue_by_length() -> None:
    runtime = FakeRuntime(pause_s=0.05)
    batcher = await started(runtime, max_concurrent_batches=2, max_queue_delay_s=10.0)
    results = await asyncio.gather(*batcher.submit([[1] * 9, [2], [3] * 8, [4]], False, None))
    assert sorted(runtime.batches) == [(2, 1), (2, 9)]  # short with short, long with long, at once
    assert [r.batch_size for r in results] == [2, 2, 2, 2]
    await batcher.stop()


async def test_quiet_server_runs_at_once_and_busy_server_batches() -> None:
    runtime = FakeRuntime(pause_s=0.05)
    batcher = await started(runtime, max_queue_delay_s=10.0, max_concurrent_batches=1, max_padding_ratio=1.0)
    t0 = time.monotonic()
    await asyncio.gather(*batcher.submit([[1, 2]], False, None))
    assert time.monotonic() - t0 < 1.0  # did not wait out the 10 s delay: nothing else was running
    first = batcher.submit([[1]], False, None)
    await asyncio.sleep(0.01)  # the first batch is running; these queue behind it
    rest = [batcher.submit([[i] * (i + 1)], False, None)[0] for i in range(10)]
    await asyncio.gather(*first, *rest)
    assert [shape[0] for shape in runtime.batches] == [1, 1, 10]
    await batcher.stop()


def holding(runtime: FakeRuntime, run_index: int, until: threading.Event):
    """`runtime` as a run function whose run number `run_index` (from 0) waits for `until`."""
    runs = iter(range(1_000))

    def run(ids, mask, wants, wide):
        if next(runs) == run_index:
            until.wait(10)
        return runtime(ids, mask, wants, wide)

    return run


async def test_delay_closes_a_batch_while_another_runs() -> None:
    first_may_end = threading.Event()
    runtime = FakeRuntime()
    run = holding(runtime, 0, first_may_end)  # the first batch keeps running until the end of the test

    # without a wide session (a GPU, or one thread asked for) a lone batch leaves the other slot free
    limits = limits_of(max_queue_delay_s=0.5, max_concurrent_batches=2, wide_when_alone=False)
    batcher = Batcher(run, limits)
    batcher.start()
    blocked = batcher.submit([[1]], None, None)  # runs at once: nothing else was running
    await asyncio.sleep(0.01)
    waiting = batcher.submit([[2], [3]], None, None)
    await asyncio.sleep(0.05)
    # a batch is running and more texts may come: these wait for the delay, not for the first batch
    assert runtime.batches == [] and not any(f.done() for f in waiting)
    await asyncio.gather(*waiting)
    assert runtime.batches == [(2, 1)] and not blocked[0].done()  # ran beside the first batch
    first_may_end.set()
    await asyncio.gather(*blocked)
    await batcher.stop()


async def test_full_queue_refuses_at_once_and_keeps_accepted_items() -> None:
    runtime = FakeRuntime()
    runtime.gate.clear()
    batcher = await started(runtime, max_queue_size=3, max_concurrent_batches=1)
    running = batcher.submit([[1]], False, None)
    await asyncio.sleep(0.01)
    queued = batcher.submit([[2], [3]], False, None)
    with pytest.raises(QueueFull, match="the limit is 3"):
        batcher.submit([[4], [5]], False, None)
    assert batcher.depth == 2
    runtime.gate.set()
    results = await asyncio.gather(*running, *queued)
    assert [r.value[0] for r in results] == [1, 2, 3]
    await batcher.stop()


async def test_cancelled_and_expired_items_are_not_computed() -> None:
    runtime = FakeRuntime()
    runtime.gate.clear()
    batcher = await started(runtime, max_concurrent_batches=1)
    running = batcher.submit([[1]], False, None)
    await asyncio.sleep(0.01)
    cancelled = batcher.submit([[5] * 7], False, None)
    expired = batcher.submit([[6] * 8], False, time.monotonic() + 0.01)
    kept = batcher.submit([[7] * 3], False, None)
    cancelled[0].cancel()
    await asyncio.sleep(0.03)
    runtime.gate.set()
    await asyncio.gather(*running, *kept)
    with pytest.raises(DeadlineExpired):
        await expired[0]
    assert runtime.batches == [(1, 1), (1, 3)]
    await batcher.stop()


async def test_runtime_failure_fails_only_its_batch() -> None:
    runtime = FakeRuntime()
    batcher = await started(runtime)
    runtime.fail_next = True
    with pytest.raises(RuntimeFailure):
        await asyncio.gather(*batcher.submit([[1], [2]], False, None))
    result = await batcher.submit([[3]], False, None)[0]
    assert result.value[0] == 3
    await batcher.stop()


async def test_a_later_small_request_does_not_wait_behind_a_large_one() -> None:
    runtime = FakeRuntime()
    runtime.gate.clear()
    batcher = await started(runtime, max_batch_size=8, max_concurrent_batches=1)
    large = batcher.submit([[1] * 10] * 40, "large", None)  # its first 8 texts start running at once
    await asyncio.sleep(0.01)
    small = batcher.submit([[2] * 3], "small", None)
    runtime.gate.set()
    await asyncio.gather(*large, *small)
    # the small request's turn came in the round right after the one running when it arrived (its
    # own batch, by length, then 7 more of the large request's texts), not after the 32 texts of
    # the large request still queued ahead of it
    assert runtime.batches[:3] == [(8, 10), (1, 3), (7, 10)]
    assert sum(size for size, _ in runtime.batches) == 41
    await batcher.stop()


async def test_a_round_answers_its_texts_together_when_its_last_batch_ends() -> None:
    second_may_run = threading.Event()
    runtime = FakeRuntime()
    run = holding(runtime, 1, second_may_run)  # the round's second batch (the long text) is slow

    batcher = Batcher(run, limits_of(max_concurrent_batches=1))
    batcher.start()
    short, long = batcher.submit([[1] * 2, [2] * 40], None, None)
    await asyncio.sleep(0.05)
    assert runtime.batches == [(1, 2)] and not short.done()  # its batch ran, its answer waits
    second_may_run.set()
    answers = await asyncio.gather(short, long)
    assert runtime.batches == [(1, 2), (1, 40)]
    assert [(a.batch_size, a.padded_length) for a in answers] == [(1, 2), (1, 40)]
    assert answers[0].compute_seconds == answers[1].compute_seconds  # the round's time
    await batcher.stop()


async def test_a_failing_batch_fails_only_its_texts_not_the_rest_of_its_round() -> None:
    runtime = FakeRuntime()
    batcher = await started(runtime, max_concurrent_batches=1)
    runtime.fail_next = True  # the round's first batch: the short texts
    futures = batcher.submit([[1] * 2, [2] * 2, [3] * 30], None, None)
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    assert [type(o) for o in outcomes[:2]] == [RuntimeFailure, RuntimeFailure]
    assert outcomes[2].value[0] == 90
    await batcher.stop()


async def test_select_seeds_with_the_smallest_start_tag_then_the_oldest() -> None:
    late_turn = item(10, age=1.0, start=500.0)
    first_turn = item(3, age=0.0, start=0.0)
    tie_older = item(20, age=0.5, start=0.0)
    limits = limits_of(max_batch_size=1)
    assert select([late_turn, first_turn, tie_older], limits) == [tie_older]
    assert select([late_turn, first_turn], limits) == [first_turn]


async def test_a_request_larger_than_the_queue_is_invalid_not_retryable() -> None:
    batcher = await started(FakeRuntime(), max_queue_size=4)
    with pytest.raises(InvalidInput, match="the request has 5 texts and the queue holds at most 4"):
        batcher.submit([[1]] * 5, None, None)
    assert batcher.depth == 0
    await batcher.stop()


async def test_stop_answers_everything_accepted_then_refuses() -> None:
    runtime = FakeRuntime(pause_s=0.01)
    batcher = await started(runtime, max_batch_size=4)
    futures = [f for i in range(20) for f in batcher.submit([[i + 1]], False, None)]
    await batcher.stop()
    assert all(f.done() and not f.exception() for f in futures)
    assert sorted(f.result().value[0] for f in futures) == list(range(1, 21))
    with pytest.raises(NotServing):
        batcher.submit([[1]], False, None)


async def test_a_stream_of_short_texts_does_not_starve_a_long_one() -> None:
    """The tail bound: later texts never take an earlier text's turn, so a text is a batch's seed
    once the texts queued before it have run, however well the later ones batch together."""
    steps = threading.Semaphore(0)
    runtime = FakeRuntime()
    original = runtime.__call__

    def stepped(ids, mask, wants, wide):
        steps.acquire(timeout=5)  # one batch per step
        return original(ids, mask, wants, wide)

    batcher = Batcher(stepped, limits_of(max_batch_size=4, max_concurrent_batches=1, max_padding_ratio=0.1))
    batcher.start()
    first = batcher.submit([[1] * 5], None, None)  # runs at once: nothing else was running
    await asyncio.sleep(0.01)
    ahead = [f for _ in range(6) for f in batcher.submit([[1] * 5], None, None)]
    long = batcher.submit([[2] * 60], None, None)
    stream = []
    for _ in range(12):  # a short text keeps arriving, and batches well with the others
        stream += batcher.submit([[1] * 5], None, None)
        steps.release()
        await asyncio.sleep(0.02)
        if long[0].done():
            break
    # the six texts ahead of it took two rounds (4, then 2 with it): it ran in the second
    assert long[0].done()
    assert runtime.batches.index((1, 60)) == 3
    for _ in range(20):
        steps.release()
    await asyncio.gather(*first, *ahead, *long, *stream)
    await batcher.stop()


async def test_a_lone_batch_on_a_quiet_server_runs_wide_and_nothing_starts_beside_it() -> None:
    runtime = FakeRuntime()
    batcher = Batcher(runtime, limits_of(max_queue_delay_s=0.0))
    batcher.start()
    for n in range(QUIET_ROUNDS + 1):  # one caller at a time: the server turns quiet
        await batcher.submit([[n + 1]], None, None)[0]
    assert runtime.wide == [False] * QUIET_ROUNDS + [True]
    runtime.gate.clear()  # the next batch holds the runtime until the gate opens
    first = batcher.submit([[3]], None, None)
    await asyncio.sleep(0.05)
    second = batcher.submit([[4]], None, None)  # arrives while the wide batch runs: it must wait
    await asyncio.sleep(0.05)
    assert runtime.wide[-1:] == [True] and not second[0].done()
    runtime.gate.set()
    await asyncio.gather(*first, *second)
    assert runtime.wide[-2:] == [True, True]  # each found nothing running and nothing waiting
    runtime.gate.clear()  # with work waiting, batches run narrow and side by side
    many = batcher.submit([[5] * 4, [6] * 4, [7] * 9, [8] * 9], None, None)
    await asyncio.sleep(0.05)
    runtime.gate.set()
    await asyncio.gather(*many)
    assert runtime.wide[-2:] == [False, False]
    await batcher.stop()
