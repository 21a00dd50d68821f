"""The engine over the tiny model: answers sized before any work, heavy requests off the event loop."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest
import pytest_asyncio

from service.core.answer_size import response_bytes
from service.core.errors import InvalidInput
from service.core.postprocess import make_run_fn
from service.core.preprocess import Encoded, Windows, window_starts
from service.core.results import AttentionMode
from service.core.windows import placed
from service.ops.settings import Settings
from service.versions.assembly import build_engine

if TYPE_CHECKING:
    from service.core.engine import Engine


@pytest_asyncio.fixture(loop_scope="function")
async def engine(model_root: Path) -> AsyncIterator[Engine]:
    running = build_engine(Settings(model_dir=model_root, max_message_bytes=256 * 1024))
    await running.start()
    yield running
    await running.stop()


def test_full_attention_size_grows_with_tokens_squared_and_padding() -> None:
    alone = response_bytes([64], AttentionMode.FULL, layers=6, heads=12, padded=False)
    assert 6 * 12 * 64 * 64 * 4 < alone < 6 * 12 * 64 * 64 * 4 * 1.1
    summary = response_bytes([64], AttentionMode.SUMMARY, layers=6, heads=12, padded=False)
    assert summary < alone / 100
    # KServe pads each text's attention to the longest one's
    mixed = [64] + [4] * 7
    assert response_bytes(mixed, AttentionMode.FULL, 6, 12, padded=True) > 7 * response_bytes(
        mixed, AttentionMode.FULL, 6, 12, padded=False
    )


async def test_an_answer_that_cannot_fit_is_refused_before_queueing(engine: Engine) -> None:
    long_text = "word " * 200
    with pytest.raises(
        InvalidInput, match=r"would take about 1\.1 MiB .* the message limit is 0\.2 MiB"
    ) as caught:
        await engine.predict([long_text] * 32, AttentionMode.FULL, None)
    fitting = int(re.search(r"send at most (\d+) such texts", caught.value.message).group(1))  # type: ignore[union-attr]
    assert engine.batcher.depth == 0
    # the advice is exact: that many texts are answered, one more is refused
    results = await engine.predict([long_text] * fitting, AttentionMode.FULL, None)
    assert all(r.attention is not None and r.attention.weights is not None for r in results)
    with pytest.raises(InvalidInput):
        await engine.predict([long_text] * (fitting + 1), AttentionMode.FULL, None)
    # without full attention the same request is small
    assert len(await engine.predict([long_text] * 32, AttentionMode.SUMMARY, None)) == 32


async def test_large_requests_are_tokenized_off_the_event_loop(engine: Engine, monkeypatch) -> None:
    threads: list[threading.Thread] = []
    encode = engine.preprocessor.encode

    def spy(texts, **named):
        threads.append(threading.current_thread())
        return encode(texts, **named)

    monkeypatch.setattr(engine.preprocessor, "encode", spy)
    await engine.predict(["short and sweet"], AttentionMode.NONE, None)
    await engine.predict(["a rather long review " * 900] * 8, AttentionMode.NONE, None)
    loop_thread = threading.current_thread()
    assert threads[0] is loop_thread  # a few characters: cheaper than a thread hop
    assert threads[1] is not loop_thread


async def test_rows_carry_only_the_attention_their_caller_asked_for(engine: Engine) -> None:
    run = make_run_fn(engine.model)
    ids = np.array([[2, 40, 41, 3, 0, 0], [2, 50, 51, 52, 53, 3]], dtype=np.int64)
    mask = (ids != 0).astype(np.int64)
    gone, full = run(ids, mask, [None, AttentionMode.FULL], False)
    assert gone.cls_attention is None and gone.weights is None  # the caller left: no attention work
    assert full.weights is not None and full.weights.shape == (1, 2, 6, 6)
    assert full.weights.base is None  # its own array, not a view keeping the batch's alive
    summary, none = run(ids, mask, [AttentionMode.SUMMARY, AttentionMode.NONE], True)
    assert summary.rollout is not None and summary.rollout.shape == (4,) and summary.weights is None
    assert none.cls_attention is None
    np.testing.assert_allclose(summary.probabilities, gone.probabilities, atol=1e-6)


async def test_probabilities_do_not_depend_on_the_event_loop(engine: Engine) -> None:
    texts = ["good", "bad film"]
    first = await engine.predict(texts, AttentionMode.NONE, None)
    second = await asyncio.gather(*(engine.predict([t], AttentionMode.NONE, None) for t in texts))
    for a, (b,) in zip(first, second, strict=True):
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)


async def test_a_repeat_is_answered_from_the_cache_and_a_request_runs_each_text_once(
    model_root: Path, monkeypatch
) -> None:
    engine = build_engine(Settings(model_dir=model_root, cache_entries=64))
    await engine.start()
    try:
        await repeats_run_once(engine, monkeypatch)
    finally:
        await engine.stop()


async def repeats_run_once(engine: Engine, monkeypatch) -> None:
    submitted: list[int] = []
    submit = engine.batcher.submit

    def spy(sequences, *rest):
        submitted.append(len(sequences))
        return submit(sequences, *rest)

    monkeypatch.setattr(engine.batcher, "submit", spy)
    first = await engine.predict(["Loved it.", "Loved it.", "Hated it."], AttentionMode.NONE, None)
    assert submitted == [2]
    assert np.array_equal(first[0].probabilities, first[1].probabilities)
    second = await engine.predict(["Hated it.", "Something new."], AttentionMode.NONE, None)
    assert submitted == [2, 1]
    assert second[0].served.batch_size == 0 and second[1].served.batch_size > 0
    assert np.array_equal(second[0].probabilities, first[2].probabilities)
    # a bad text is named by its place in the request, whatever the cache answered before it
    with pytest.raises(InvalidInput, match="text 2 is empty"):
        await engine.predict(["Loved it.", "Something new.", "  "], AttentionMode.NONE, None)


async def test_a_long_text_read_whole_is_the_mean_of_its_windows_logits(engine: Engine) -> None:
    long = " ".join(f"the {n}th scene was dull but the ending was wonderful" for n in range(30))
    short = "a fine film"
    cut_answer, short_alone = await engine.predict([long, short], AttentionMode.NONE, None)
    whole, short_beside = await engine.predict([long, short], AttentionMode.NONE, None, whole=True)
    windows = engine.preprocessor.windows(long)
    assert cut_answer.truncated and cut_answer.windows == 1
    assert not whole.truncated and whole.windows == len(windows.parts) > 2
    assert whole.num_tokens == len(windows.whole.ids) > engine.spec.max_length
    # every window is as wide as the model reads, they overlap, and together they read every token
    content, width = windows.whole.ids[1:-1], engine.spec.max_length - 2
    begins = window_starts(len(content), width)
    assert begins[0] == 0 and begins[-1] + width == len(content)
    assert all(0 < b - a < width for a, b in zip(begins, begins[1:], strict=False))
    for begin, part in zip(begins, windows.parts, strict=True):
        assert part.ids[1:-1] == content[begin : begin + width] and len(part.ids) == width + 2
    # the answer: the softmax of the mean of each window's logits, each window read as a text alone
    run = make_run_fn(engine.model)
    logits = [
        run(np.array([part.ids]), np.ones((1, len(part.ids)), np.int64), [AttentionMode.NONE], False)[
            0
        ].logits
        for part in windows.parts
    ]
    mean = np.mean(logits, axis=0)
    expected = np.exp(mean - mean.max()) / np.exp(mean - mean.max()).sum()
    np.testing.assert_allclose(whole.probabilities, expected, atol=1e-5)
    np.testing.assert_allclose(short_beside.probabilities, short_alone.probabilities, atol=1e-5)
    # its attention summary: the windows' placed on the whole text's tokens, each a distribution
    (seen,) = await engine.predict([long], AttentionMode.SUMMARY, None, whole=True)
    assert seen.attention is not None and seen.attention.tokens == windows.whole.tokens
    assert seen.attention.rollout.shape == (len(windows.whole.ids),)
    assert seen.attention.rollout.sum() == pytest.approx(1.0, abs=1e-4)
    assert seen.attention.cls_attention.sum() == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_allclose(seen.probabilities, whole.probabilities, atol=1e-5)
    with pytest.raises(InvalidInput, match="full attention is not given"):
        await engine.predict([long], AttentionMode.FULL, None, whole=True)


def test_window_attention_is_placed_on_the_tokens_each_window_read() -> None:
    # two windows of 2 tokens ([CLS] a b [SEP]) over a text of 3 tokens: begins 0 and 1
    whole = Encoded([0, 1, 2, 3, 9], ["[CLS]", "a", "b", "c", "[SEP]"], False)
    windows = Windows(whole, [whole, whole], [0, 1])
    first = np.array([0.1, 0.4, 0.4, 0.1], np.float32)  # [CLS] a b [SEP]
    second = np.array([0.3, 0.2, 0.2, 0.3], np.float32)  # [CLS] b c [SEP]
    got = placed([first, second], windows)
    mean = np.array([0.2, 0.4, (0.4 + 0.2) / 2, 0.2, 0.2])  # b read twice: averaged
    np.testing.assert_allclose(got, mean / mean.sum(), atol=1e-6)
