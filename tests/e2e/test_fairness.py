"""One caller must never hurt the others: heavy requests, deadlines and answers too big to send."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest

from sentiment_client.pb.inference import grpc_predict_v2_pb2 as v2
from sentiment_client.pb.inference import grpc_predict_v2_pb2_grpc as v2_grpc
from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from sentiment_client.pb.sentiment.v1 import sentiment_pb2_grpc
from tests.e2e.conftest import RunningServer, launch, scrape

PREDICT = "sentiment.v1.SentimentService/Predict"


def counted(server: RunningServer, method: str = PREDICT) -> Counter[str]:
    return Counter(
        {
            dict(labels)["code"]: int(value)
            for (name, labels), value in scrape(server).items()
            if name == "sentiment_requests_total" and dict(labels)["method"] == method
        }
    )


async def test_callers_who_ran_out_of_time_are_counted_as_deadline_exceeded(
    model_root: Path, tmp_path: Path
) -> None:
    running = launch(model_root, tmp_path, "--max-concurrent-batches", "1", "--max-batch-size", "2")
    try:
        texts = [f"a long enough review, number {i}, to keep the model busy" for i in range(64)]
        async with grpc.aio.insecure_channel(running.target) as channel:
            stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
            outcomes = await asyncio.gather(
                *(stub.Predict(pb.PredictRequest(texts=texts), timeout=0.15) for _ in range(30)),
                return_exceptions=True,
            )
        seen = Counter(
            o.code().name if isinstance(o, grpc.RpcError) else "OK"
            for o in outcomes  # type: ignore[union-attr]
        )
        assert seen["DEADLINE_EXCEEDED"] > 0
        for _ in range(50):  # the interceptor counts a call just after it ends
            server_seen = counted(running)
            if sum(server_seen.values()) >= sum(seen.values()):
                break  # every call counted (usually; see below)
            time.sleep(0.05)
        print(f"clients saw {dict(seen)}, the server counted {dict(server_seen)}")
        # each call the server counted, it counted as the client saw it: none as CANCELLED. (A call
        # whose deadline passes before any handler runs is not counted at all: the gap is known.)
        assert server_seen["CANCELLED"] == 0
        assert server_seen["DEADLINE_EXCEEDED"] > 0
        assert all(server_seen[code] <= seen[code] for code in server_seen), (server_seen, seen)
    finally:
        assert running.stop() == 0


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
async def test_a_light_caller_keeps_being_answered_during_the_heaviest_legal_request(
    model_root: Path, tmp_path: Path, attention: int
) -> None:
    running = launch(model_root, tmp_path, "--max-concurrent-batches", "1", "--max-batch-size", "1")
    try:
        options = [("grpc.max_receive_message_length", 64 << 20)]
        async with grpc.aio.insecure_channel(running.target, options=options) as channel:
            stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
            await stub.Predict(pb.PredictRequest(texts=["warm"]))
            # the limits' largest request: 256 texts of 20,000 characters (full attention: as many as fit)
            count = 256 if attention == pb.ATTENTION_MODE_NONE else 240
            heavy_text = "an endlessly long and winding review of a film " * 420
            heavy = asyncio.ensure_future(
                stub.Predict(pb.PredictRequest(texts=[heavy_text[:20_000]] * count, attention=attention))
            )
            # once the heavy request's texts wait in the queue, a light call must not wait behind all
            # of them: it is answered while most of the heavy request is still to run
            for _ in range(2000):
                if scrape(running)[("sentiment_queue_depth", ())] >= 100 or heavy.done():
                    break
                await asyncio.sleep(0.005)
            assert not heavy.done()
            light: list[float] = []
            while not heavy.done():
                started = time.monotonic()
                await stub.Predict(pb.PredictRequest(texts=["short and sweet"]), timeout=30)
                light.append(time.monotonic() - started)
                if len(light) == 1:
                    left = scrape(running)[("sentiment_queue_depth", ())]
                    assert left >= 50, f"the light call waited behind the heavy request ({left} texts left)"
                await asyncio.sleep(0.02)
            answer = await heavy
        assert len(answer.predictions) == count
        print(f"light calls during the heavy request: {len(light)}, slowest {max(light) * 1000:.0f} ms")
    finally:
        assert running.stop() == 0
