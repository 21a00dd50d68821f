"""Faults and abusive callers against real servers: a failing batch, a model directory that goes away
while serving, and callers that open streams and never read their answers."""

from __future__ import annotations

import asyncio
import shutil
import statistics
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from sentiment_client.pb.sentiment.v1 import sentiment_pb2_grpc
from service.config import Settings
from service.server import Server
from service.servicers._streams import WINDOW
from tests.e2e.conftest import launch, scrape

LONG = " ".join("the film was a great sad brilliant dull story with moving acting".split() * 10)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_a_runtime_failure_fails_only_its_batch_and_the_next_batch_succeeds(model_root: Path) -> None:
    settings = Settings(
        model_dir=model_root,
        host="127.0.0.1",
        port=0,
        metrics_port=-1,
        max_queue_delay_ms=30,
        log_level="ERROR",
    )
    server = Server(settings)
    await server.start()
    assert server.engine is not None
    model = server.engine.model
    real = model.run
    failed: list[int] = []

    def fails_once(input_ids, attention_mask, with_attention, wide=False):
        if not failed:
            failed.append(int(input_ids.shape[0]))
            raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : injected fault")
        return real(input_ids, attention_mask, with_attention, wide)

    model.run = fails_once  # type: ignore[method-assign]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
            burst = await asyncio.gather(
                *(stub.Predict(pb.PredictRequest(texts=[f"text {i}"]), timeout=10) for i in range(8)),
                return_exceptions=True,
            )
            after = await stub.Predict(pb.PredictRequest(texts=["the next batch"]), timeout=10)
    finally:
        await server.stop(5)
    failures = [o for o in burst if isinstance(o, grpc.aio.AioRpcError)]
    assert len(failed) == 1 and len(failures) == failed[0]  # exactly the failed batch's calls
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
            before = stub.Predict(pb.PredictRequest(texts=["a fine film"]), timeout=10)
            (root / "1" / "model.onnx").write_bytes(b"\x00garbage" * 1000)
            (root / "1" / "config.json").write_text("{ not json")
            corrupted = stub.Predict(pb.PredictRequest(texts=["a fine film"]), timeout=10)
            shutil.rmtree(root)
            gone = stub.Predict(pb.PredictRequest(texts=["a fine film"]), timeout=10)
            info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
            status = health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
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
    try:
        rss_start = rss_mib(running.process.pid)
        hog = grpc.aio.insecure_channel(running.target)
        calls = [sentiment_pb2_grpc.SentimentServiceStub(hog).PredictStream() for _ in range(streams)]
        full = pb.PredictRequest(texts=[LONG], attention=pb.ATTENTION_MODE_FULL)

        async def flood(call) -> None:
            for i in range(per_stream):
                await call.write(pb.PredictStreamRequest(request_id=str(i), request=full))

        writers = [asyncio.create_task(flood(call)) for call in calls]  # answers are never read
        await asyncio.sleep(3)
        async with grpc.aio.insecure_channel(running.target) as channel:
            stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
            for _ in range(20):  # a well-behaved caller is answered all along
                answer = await stub.Predict(pb.PredictRequest(texts=["a fine film"]), timeout=5)
                assert len(answer.predictions) == 1
        computed = scrape(running)[("sentiment_texts_total", ())]
        rss_end = rss_mib(running.process.pid)
        for writer in writers:
            writer.cancel()
        for call in calls:
            call.cancel()
        await hog.close()
        print(
            f"\n{streams} streams x {per_stream} requests sent, {computed - 20:.0f} computed; "
            f"RSS {rss_start:.0f} -> {rss_end:.0f} MiB"
        )
        # each stream stops being read once WINDOW answers wait to be sent, plus what the transport holds
        # (about 4 MiB of answers a stream on one connection); without the window every request sent
        # was computed and its answer held
        assert streams * WINDOW <= computed - 20 <= streams * per_stream // 2, computed
        assert rss_end - rss_start < 200, (rss_start, rss_end)
    finally:
        assert running.stop() == 0, running.log()


async def test_overload_is_refused_fast_then_the_server_recovers_and_every_accepted_call_was_answered(
    model_root: Path, tmp_path: Path
) -> None:
    running = launch(
        model_root,
        tmp_path,
        "--max-queue-size",
        "32",
        "--max-texts-per-request",
        "8",
        "--max-concurrent-batches",
        "1",
    )
    method = (("code", "OK"), ("method", "sentiment.v1.SentimentService/Predict"))
    try:
        async with grpc.aio.insecure_channel(running.target) as channel:
            stub = sentiment_pb2_grpc.SentimentServiceStub(channel)

            async def timed(texts: list[str]) -> tuple[float, object]:
                began = time.perf_counter()
                try:
                    outcome: object = await stub.Predict(pb.PredictRequest(texts=texts), timeout=30)
                except grpc.aio.AioRpcError as err:
                    outcome = err
                return time.perf_counter() - began, outcome

            async def one_caller_p50() -> float:
                return statistics.median([(await timed(["a fine film"]))[0] for _ in range(30)])

            quiet = await one_caller_p50()
            ok_before = scrape(running).get(("sentiment_requests_total", method), 0)
            until = time.monotonic() + 2

            async def hammer() -> list[tuple[float, object]]:  # sends again as soon as it is told
                outcomes = []
                while time.monotonic() < until:
                    outcomes.append(await timed([LONG] * 8))
                return outcomes

            flood = asyncio.gather(*(hammer() for _ in range(64)))
            probes = []
            await asyncio.sleep(0.3)
            while not flood.done():  # one more caller while the queue is full: how fast is it told?
                probes.append(await timed([LONG] * 8))
                await asyncio.sleep(0.02)
            burst = [outcome for outcomes in await flood for outcome in outcomes]
            refused = [s for s, o in burst if isinstance(o, grpc.aio.AioRpcError)]
            answered = [o for _, o in [*burst, *probes] if isinstance(o, pb.PredictResponse)]
            codes = {o.code() for _, o in [*burst, *probes] if isinstance(o, grpc.aio.AioRpcError)}
            probe_refusals = [s for s, o in probes if isinstance(o, grpc.aio.AioRpcError)]
            ok_after = scrape(running)[("sentiment_requests_total", method)]
            recovered = await one_caller_p50()
        print(
            f"\n64 callers of 8 texts for 2 s: {len(answered)} answered, {len(refused)} refused; a caller "
            "arriving while the queue is full was refused in "
            f"{1000 * statistics.median(probe_refusals):.1f} ms "
            f"(p50 of {len(probe_refusals)}); 1-caller p50 {1000 * quiet:.1f} ms before, "
            f"{1000 * recovered:.1f} ms after"
        )
        assert probe_refusals and statistics.median(probe_refusals) < 0.5
        assert refused and answered and codes == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert ok_after - ok_before == len(answered)  # the server's count equals what callers received
        assert all(len(a.predictions) == 8 for a in answered)  # type: ignore[attr-defined]
        assert recovered < 3 * quiet + 0.02  # back to the quiet figure, not stuck behind a backlog
    finally:
        assert running.stop() == 0, running.log()


async def test_calls_expired_or_cancelled_while_queued_are_dropped_not_computed(model_root: Path) -> None:
    settings = Settings(
        model_dir=model_root,
        host="127.0.0.1",
        port=0,
        metrics_port=-1,
        max_concurrent_batches=1,
        log_level="ERROR",
    )
    server = Server(settings)
    await server.start()
    assert server.engine is not None
    model = server.engine.model
    real = model.run
    slowed: list[int] = []

    def slow_first_batch(input_ids, attention_mask, with_attention, wide=False):
        if not slowed:  # the runtime is busy for 0.5 s: whatever arrives meanwhile waits in the queue
            slowed.append(int(input_ids.shape[0]))
            time.sleep(0.5)
        return real(input_ids, attention_mask, with_attention, wide)

    model.run = slow_first_batch  # type: ignore[method-assign]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
            first = asyncio.ensure_future(stub.Predict(pb.PredictRequest(texts=["first"]), timeout=10))
            await asyncio.sleep(0.1)
            late = await asyncio.gather(
                *(stub.Predict(pb.PredictRequest(texts=[f"late {i}"]), timeout=0.2) for i in range(10)),
                return_exceptions=True,
            )
            stream = stub.PredictStream()
            for i in range(10):
                request = pb.PredictRequest(texts=[f"streamed {i}"])
                await stream.write(pb.PredictStreamRequest(request_id=str(i), request=request))
            await asyncio.sleep(0.05)
            stream.cancel()  # its ten queued requests go with it
            assert len((await first).predictions) == 1
            await stub.Predict(pb.PredictRequest(texts=["after"]), timeout=10)
    finally:
        await server.stop(5)
    registry = server.metrics.registry

    def value(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    codes = [o.code() for o in late if isinstance(o, grpc.aio.AioRpcError)]
    assert codes == [grpc.StatusCode.DEADLINE_EXCEEDED] * 10
    assert value("sentiment_dropped_texts_total", reason="deadline") == 10
    assert value("sentiment_dropped_texts_total", reason="cancelled") == 10
    # computed: "first" and "after", nothing else; the batch sizes say the same
    assert value("sentiment_texts_total") == 2 and value("sentiment_batch_size_sum") == 2
