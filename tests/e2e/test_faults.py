"""Faults and abusive callers against real servers: a failing batch, a model directory that goes away
while serving, and callers that open streams and never read their answers."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from sentiment_client.pb.sentiment.v1 import sentiment_pb2_grpc
from service.calls.streams import WINDOW
from tests.e2e.conftest import PATIENCE_S, PREDICT, codes, eventually, in_process, launch, sample, scrape

LONG = " ".join("the film was a great sad brilliant dull story with moving acting".split() * 10)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_a_runtime_failure_fails_only_its_batch_and_the_next_batch_succeeds(model_root: Path) -> None:
    async with in_process(model_root, fail=1, max_queue_delay_ms=30) as (server, runtime):
        target = f"127.0.0.1:{server.port}"
        async with grpc.aio.insecure_channel(target) as channel:
            stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
            burst = await asyncio.gather(
                *(stub.Predict(pb.PredictRequest(texts=[f"text {i}"]), timeout=PATIENCE_S) for i in range(8)),
                return_exceptions=True,
            )
            after = await stub.Predict(pb.PredictRequest(texts=["the next batch"]), timeout=PATIENCE_S)
    failures = [o for o in burst if isinstance(o, grpc.aio.AioRpcError)]
    assert len(failures) == len(runtime.batches[0])  # exactly the failed batch's calls
    for failure in failures:
        assert failure.code() is grpc.StatusCode.INTERNAL
        assert "the model failed on the batch" in (failure.details() or "")
    assert all(len(o.predictions) == 1 for o in burst if isinstance(o, pb.PredictResponse))
    assert len(after.predictions) == 1


def test_the_model_directory_vanishing_or_corrupted_does_not_take_the_server_down(
    model_root: Path, tmp_path: Path
) -> None:
    root = tmp_path / "models"
    shutil.copytree(model_root, root)
    running = launch(root, tmp_path)
    try:
        with grpc.insecure_channel(running.target) as channel:
            stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            request = pb.PredictRequest(texts=["a fine film"])
            before = stub.Predict(request, timeout=PATIENCE_S)
            (root / "1" / "model.onnx").write_bytes(b"\x00garbage" * 1000)
            (root / "1" / "config.json").write_text("{ not json")
            corrupted = stub.Predict(request, timeout=PATIENCE_S)
            shutil.rmtree(root)
            gone = stub.Predict(request, timeout=PATIENCE_S)
            info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=PATIENCE_S)
            status = health.Check(health_pb2.HealthCheckRequest(), timeout=PATIENCE_S).status
        for answer in (corrupted, gone):
            assert list(answer.predictions[0].probabilities) == list(before.predictions[0].probabilities)
        assert info.version == 1 and status == health_pb2.HealthCheckResponse.SERVING
    finally:
        assert running.stop() == 0, running.log()


async def test_streams_that_never_read_do_not_stall_others_and_hold_memory_bounded(
    model_root: Path, tmp_path: Path
) -> None:
    running = launch(model_root, tmp_path)
    streams, per_stream = 12, 400
    texts = ("sentiment_texts_total", ())
    try:
        rss_start = rss_mib(running.process.pid)
        # the hog's transport keeps a fixed flow-control window: with BDP probing it grows its
        # windows as timing allows, and what it buffers (so what the server computes) varies
        fixed = [("grpc.http2.bdp_probe", 0)]
        async with grpc.aio.insecure_channel(running.target, options=fixed) as hog:
            calls = [sentiment_pb2_grpc.SentimentServiceStub(hog).PredictStream() for _ in range(streams)]
            full = pb.PredictRequest(texts=[LONG], attention=pb.ATTENTION_MODE_FULL)

            async def flood(call) -> None:
                for i in range(per_stream):
                    await call.write(pb.PredictStreamRequest(request_id=str(i), request=full))

            writers = [asyncio.create_task(flood(call)) for call in calls]  # answers are never read
            try:
                # every stream is read and answered up to its window, whoever reads the answers
                await eventually(
                    f"{streams} x {WINDOW} texts computed", lambda: scrape(running)[texts] >= streams * WINDOW
                )
                async with grpc.aio.insecure_channel(running.target) as channel:
                    stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
                    for _ in range(20):  # a well-behaved caller is answered all along
                        answer = await stub.Predict(
                            pb.PredictRequest(texts=["a fine film"]), timeout=PATIENCE_S
                        )
                        assert len(answer.predictions) == 1
                computed = scrape(running)[texts]
                rss_end = rss_mib(running.process.pid)
            finally:
                for writer in writers:
                    writer.cancel()
                for call in calls:
                    call.cancel()
                await asyncio.gather(*writers, return_exceptions=True)
        print(
            f"\n{streams} streams x {per_stream} requests sent, {computed - 20:.0f} computed; "
            f"RSS {rss_start:.0f} -> {rss_end:.0f} MiB"
        )
        # each stream stops being read once WINDOW answers wait to be sent, plus what the transport holds
        # (the hog's fixed flow-control window); without the window every request sent was computed
        # and its answer held
        assert streams * WINDOW <= computed - 20 <= streams * per_stream // 2, computed
        assert rss_end - rss_start < 200, (rss_start, rss_end)
    finally:
        assert running.stop() == 0, running.log()


async def test_a_full_queue_refuses_at_once_then_every_accepted_call_is_answered(model_root: Path) -> None:
    texts = [LONG] * 8
    async with in_process(
        model_root, hold=1, max_queue_size=32, max_texts_per_request=8, max_concurrent_batches=1
    ) as (server, runtime):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = sentiment_pb2_grpc.SentimentServiceStub(channel)

            def predict(count: int = 8):
                return stub.Predict(pb.PredictRequest(texts=texts[:count]), timeout=PATIENCE_S)

            accepted = [asyncio.ensure_future(predict())]
            await runtime.held()  # the runtime is busy with the first call's texts, the queue empty
            accepted += [asyncio.ensure_future(predict()) for _ in range(4)]
            await eventually("a full queue", lambda: sample(server, "sentiment_queue_depth") == 32)
            # while the runtime is still busy, later callers are refused at once: they do not wait for
            # room; a single text does not fit either
            refused = await asyncio.gather(*(predict(n) for n in (8, 8, 8, 1)), return_exceptions=True)
            assert codes(refused) == {"RESOURCE_EXHAUSTED": 4}
            assert all("the limit is 32" in (r.details() or "") for r in refused)  # type: ignore[union-attr]
            assert not any(call.done() for call in accepted)
            runtime.release()
            answers = await asyncio.gather(*accepted)
            assert all(len(a.predictions) == 8 for a in answers)
            # the server recovers: the queue drains and the next caller is answered
            assert len((await predict()).predictions) == 8
            await eventually(
                "the calls counted",
                lambda: (
                    sample(server, "sentiment_requests_total", method=PREDICT, code="OK", protocol="grpc")
                    == 6
                ),
            )
            assert sample(server, "sentiment_queue_depth") == 0
    assert (
        sample(server, "sentiment_requests_total", method=PREDICT, code="RESOURCE_EXHAUSTED", protocol="grpc")
        == 4
    )
    assert sample(server, "sentiment_dropped_texts_total", reason="queue_full") == 3 * 8 + 1
    assert sample(server, "sentiment_texts_total") == 6 * 8  # every accepted text, each once


async def test_calls_expired_or_cancelled_while_queued_are_dropped_not_computed(model_root: Path) -> None:
    stream_method = "sentiment.v1.SentimentService/PredictStream"
    async with in_process(model_root, hold=1, max_concurrent_batches=1) as (server, runtime):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
            first = asyncio.ensure_future(
                stub.Predict(pb.PredictRequest(texts=["first"]), timeout=PATIENCE_S)
            )
            await runtime.held()  # the runtime is busy: whatever arrives meanwhile waits in the queue
            stream = stub.PredictStream()
            for i in range(10):
                request = pb.PredictRequest(texts=[f"streamed {i}"])
                await stream.write(pb.PredictStreamRequest(request_id=str(i), request=request))
            await eventually(
                "the streamed texts queued", lambda: sample(server, "sentiment_queue_depth") == 10
            )
            stream.cancel()  # its ten queued requests go with it
            await eventually(
                "the stream ended on the server",
                lambda: (
                    sample(
                        server,
                        "sentiment_requests_total",
                        method=stream_method,
                        code="CANCELLED",
                        protocol="grpc",
                    )
                    == 1
                ),
            )
            late = await asyncio.gather(
                *(stub.Predict(pb.PredictRequest(texts=[f"late {i}"]), timeout=1) for i in range(10)),
                return_exceptions=True,
            )
            assert codes(late) == {"DEADLINE_EXCEEDED": 10}
            await eventually(
                "the late calls ended on the server",
                lambda: (
                    sample(
                        server,
                        "sentiment_requests_total",
                        method=PREDICT,
                        code="DEADLINE_EXCEEDED",
                        protocol="grpc",
                    )
                    == 10
                ),
            )
            runtime.release()
            assert len((await first).predictions) == 1
            await stub.Predict(pb.PredictRequest(texts=["after"]), timeout=PATIENCE_S)
    assert sample(server, "sentiment_dropped_texts_total", reason="deadline") == 10
    assert sample(server, "sentiment_dropped_texts_total", reason="cancelled") == 10
    # computed: "first" and "after", nothing else; the batch sizes say the same
    assert sample(server, "sentiment_texts_total") == 2 and sample(server, "sentiment_batch_size_sum") == 2
    assert [len(rows) for rows in runtime.batches] == [1, 1]
