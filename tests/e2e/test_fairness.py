"""One caller must never hurt the others: heavy requests, deadlines and answers too big to send."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import grpc
import pytest

from sentiment_client.pb.inference import grpc_predict_v2_pb2 as v2
from sentiment_client.pb.inference import grpc_predict_v2_pb2_grpc as v2_grpc
from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from sentiment_client.pb.sentiment.v1 import sentiment_pb2_grpc
from tests.e2e.conftest import (
    PATIENCE_S,
    PREDICT,
    codes,
    counted,
    eventually,
    in_process,
    launch,
    sample,
    scrape,
)


async def light(stub: sentiment_pb2_grpc.SentimentServiceStub) -> float:
    """Seconds one short text takes to be answered."""
    began = asyncio.get_running_loop().time()
    await stub.Predict(pb.PredictRequest(texts=["short and sweet"]), timeout=PATIENCE_S)
    return asyncio.get_running_loop().time() - began


def answered(server: object, method: str = PREDICT) -> dict[str, int]:
    """Calls of `method` an in-process server has answered, by status code."""
    return {
        code: int(n)
        for code in ("OK", "DEADLINE_EXCEEDED", "CANCELLED", "INVALID_ARGUMENT")
        if (n := sample(server, "sentiment_requests_total", method=method, code=code, protocol="grpc"))
    }


async def test_callers_who_ran_out_of_time_are_counted_as_deadline_exceeded(model_root: Path) -> None:
    texts = [f"a review, number {i}, long enough to be worth batching" for i in range(4)]
    async with in_process(model_root, hold=1, max_concurrent_batches=1, max_batch_size=4) as (
        server,
        runtime,
    ):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
            # the first caller's texts are in the batch the runtime is busy with; the others queue
            running = asyncio.ensure_future(stub.Predict(pb.PredictRequest(texts=texts), timeout=2))
            await runtime.held()
            queued = [stub.Predict(pb.PredictRequest(texts=texts), timeout=2) for _ in range(5)]
            outcomes = await asyncio.gather(running, *queued, return_exceptions=True)
            assert codes(outcomes) == {"DEADLINE_EXCEEDED": 6}
            # the server counts each call as its caller saw it: none as CANCELLED
            await eventually("the server to count all six calls", lambda: sum(answered(server).values()) >= 6)
            assert answered(server) == {"DEADLINE_EXCEEDED": 6}
            runtime.release()
            after = await stub.Predict(pb.PredictRequest(texts=["the next caller"]), timeout=PATIENCE_S)
            assert len(after.predictions) == 1
            await eventually("the next call counted", lambda: answered(server).get("OK") == 1)
    # the running batch ran to its end (its answers went nowhere); the queued texts were never run
    assert sample(server, "sentiment_dropped_texts_total", reason="deadline") == 5 * len(texts)
    assert sample(server, "sentiment_texts_total") == len(texts) + 1


def test_full_attention_that_can_never_be_sent_is_refused_before_any_work(
    model_root: Path, tmp_path: Path
) -> None:
    running = launch(model_root, tmp_path, "--max-message-bytes", str(256 * 1024))
    try:
        long_text = "word " * 200
        with grpc.insecure_channel(running.target) as channel:
            stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
            texts_before = scrape(running)[("sentiment_texts_total", ())]
            with pytest.raises(grpc.RpcError) as caught:
                stub.Predict(pb.PredictRequest(texts=[long_text] * 32, attention=pb.ATTENTION_MODE_FULL))
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            fitting = int(re.search(r"send at most (\d+) such texts", caught.value.details()).group(1))  # type: ignore[union-attr]
            # KServe pads every text's attention to the longest: one long text among short ones counts
            v2_stub = v2_grpc.GRPCInferenceServiceStub(channel)
            message = v2.ModelInferRequest(model_name="sentiment")
            texts = [long_text.encode()] + [b"short"] * 15
            message.inputs.add(
                name="text", datatype="BYTES", shape=[len(texts)]
            ).contents.bytes_contents.extend(texts)
            message.parameters["attention"].string_param = "full"
            with pytest.raises(grpc.RpcError) as caught:
                v2_stub.ModelInfer(message)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "16 texts with attention=full" in caught.value.details()
            assert scrape(running)[("sentiment_texts_total", ())] == texts_before  # nothing was run
            # what the refusal advises is answered, within the message limit
            answer = stub.Predict(
                pb.PredictRequest(texts=[long_text] * fitting, attention=pb.ATTENTION_MODE_FULL)
            )
            assert all(len(p.attention.weights) == 2 * 64 * 64 for p in answer.predictions)
            assert 256 * 1024 * 0.8 < answer.ByteSize() <= 256 * 1024
        assert counted(running)["INVALID_ARGUMENT"] == 1
    finally:
        assert running.stop() == 0


@pytest.mark.parametrize("attention", [pb.ATTENTION_MODE_NONE, pb.ATTENTION_MODE_FULL])
async def test_a_light_caller_is_answered_after_one_batch_of_the_heaviest_legal_request(
    model_root: Path, attention: int
) -> None:
    # one batch at a time of one text each: every batch the runtime is given is one round
    async with in_process(model_root, hold=1, max_concurrent_batches=1, max_batch_size=1) as (
        server,
        runtime,
    ):
        options = [("grpc.max_receive_message_length", 64 << 20)]
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}", options=options) as channel:
            stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
            # the limits' largest request: 256 texts of 20,000 characters (full attention: as many as fit)
            count = 256 if attention == pb.ATTENTION_MODE_NONE else 240
            heavy_text = ("an endlessly long and winding review of a film " * 420)[:20_000]
            heavy = asyncio.ensure_future(
                stub.Predict(
                    pb.PredictRequest(texts=[heavy_text] * count, attention=attention), timeout=PATIENCE_S
                )
            )
            await runtime.held()  # the heavy request's first batch runs; the rest of it waits in the queue
            assert sample(server, "sentiment_queue_depth") == count - 1
            light = asyncio.ensure_future(
                stub.Predict(pb.PredictRequest(texts=["short and sweet"]), timeout=PATIENCE_S)
            )
            await eventually(
                "the light text queued", lambda: sample(server, "sentiment_queue_depth") == count
            )
            runtime.release()
            light_answer = await light
            answer = await heavy
        assert len(answer.predictions) == count
    assert len(runtime.batches) == count + 1 and all(len(rows) == 1 for rows in runtime.batches)
    light_tokens = light_answer.predictions[0].num_tokens
    assert light_tokens < answer.predictions[0].num_tokens == 64
    order = [rows[0] for rows in runtime.batches]  # each batch's one text, by its tokens
    # the light text did not wait behind the heavy request's texts queued before it: at most one
    # more of them ran first (what the server reports says the same: it ran alone, unpadded)
    assert order.count(light_tokens) == 1 and order.index(light_tokens) <= 2, order[:5]
    assert light_answer.predictions[0].batch.batch_size == 1
    assert light_answer.predictions[0].batch.padded_length == light_tokens


async def test_a_light_caller_waits_for_about_one_batch_while_the_heaviest_request_runs(
    model_root: Path,
) -> None:
    """The fairness promise, measured against the same server's quiet latency: while one caller's
    Predict of the limits' largest request runs (256 texts of 20,000 characters), a caller sending a
    short text every 20 ms waits at most about one batch more than when the server is quiet. Its
    text rides in a round with the heavy request's texts and is answered when its own batch ends."""
    async with in_process(model_root) as (server, runtime):
        runtime.per_token_s = 0.0002  # a batch of 1,024 padded tokens (the default limit) ~ 0.2 s
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = sentiment_pb2_grpc.SentimentServiceStub(channel)

            quiet = [await light(stub) for _ in range(20)]
            heavy_text = ("an endlessly long and winding review of a film " * 420)[:20_000]
            heavy = asyncio.ensure_future(
                stub.Predict(pb.PredictRequest(texts=[heavy_text] * 256), timeout=PATIENCE_S)
            )
            await eventually("the heavy request queued", lambda: sample(server, "sentiment_queue_depth") > 0)
            during = []
            while not heavy.done():
                during.append(await light(stub))
                await asyncio.sleep(0.02)
            answer = await heavy
        assert len(answer.predictions) == 256
    longest_batch = max(runtime.seconds)
    print(
        f"\nquiet max {1000 * max(quiet):.0f} ms; during the heavy request: {len(during)} calls, "
        f"max {1000 * max(during):.0f} ms; longest batch {1000 * longest_batch:.0f} ms"
    )
    assert len(during) >= 5 and longest_batch > 0.15
    # waiting for the worker that frees first costs at most one batch; riding in a round with the
    # heavy texts costs nothing more (waiting for their batch too would cost a second one)
    assert max(during) <= max(quiet) + 1.5 * longest_batch, (during, longest_batch)


async def test_a_flood_of_explanations_costs_a_light_caller_about_one_batch(model_root: Path) -> None:
    """An explanation is queued as the many passes it needs (a text's variants), so callers who ask
    for explanations without pause take their share of the runtime, not all of it: a light caller
    waits at most about one batch more than on the quiet server."""
    async with in_process(model_root) as (server, runtime):
        runtime.per_token_s = 0.0002
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = sentiment_pb2_grpc.SentimentServiceStub(channel)

            quiet = [await light(stub) for _ in range(20)]
            words = " ".join(f"the {n}th scene was slow but the ending moved me" for n in range(4))
            request = pb.PredictRequest(texts=[words] * 4, explain=pb.EXPLAIN_MODE_SHAPLEY)
            stop = asyncio.Event()
            explained = 0

            async def explainer() -> None:
                nonlocal explained
                while not stop.is_set():
                    answer = await stub.Predict(request, timeout=PATIENCE_S)
                    assert all(p.explanation.words for p in answer.predictions)
                    explained += 1

            flood = [asyncio.ensure_future(explainer()) for _ in range(4)]
            await eventually("explanations queued", lambda: sample(server, "sentiment_queue_depth") > 100)
            during = []
            for _ in range(25):
                during.append(await light(stub))
                await asyncio.sleep(0.02)
            stop.set()
            await asyncio.gather(*flood)
    longest_batch = max(runtime.seconds)
    passes = sample(server, "sentiment_explanation_passes_total", method="shapley")
    print(
        f"\nquiet max {1000 * max(quiet):.0f} ms; beside {explained} explanation requests ({passes:.0f} "
        f"passes): max {1000 * max(during):.0f} ms; longest batch {1000 * longest_batch:.0f} ms"
    )
    assert explained >= 4 and passes >= explained * 4 * 60  # 4 texts of over 30 words each
    assert max(during) <= max(quiet) + 1.5 * longest_batch, (during, longest_batch)
