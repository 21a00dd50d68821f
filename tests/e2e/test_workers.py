"""--workers: several server processes on one port, their metrics summed, one drain for all."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import urllib.request
from pathlib import Path

import grpc

from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from sentiment_client.pb.sentiment.v1 import sentiment_pb2_grpc
from tests.e2e.conftest import PATIENCE_S, PREDICT, eventually, launch, scrape, wait_until


async def test_two_workers_share_the_port_sum_their_metrics_and_drain_together(
    model_root: Path, tmp_path: Path
) -> None:
    running = launch(model_root, tmp_path, "--workers", "2")
    try:
        # the kernel balances connections: many channels reach both workers
        for i in range(24):
            with grpc.insecure_channel(running.target) as channel:
                stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
                request = pb.PredictRequest(texts=[f"good film {i}"])
                assert stub.Predict(request, timeout=PATIENCE_S).predictions
        with grpc.insecure_channel(running.target) as channel:
            stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
            info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=PATIENCE_S)
        # each worker says how it uses the machine: its share of the CPUs
        cpus = len(os.sched_getaffinity(0))
        assert info.workers == 2 and info.available_cpus == cpus
        assert info.max_concurrent_batches == max(1, cpus // 2) and info.intra_op_threads == 1
        ok = ("sentiment_requests_total", (("code", "OK"), ("method", PREDICT), ("protocol", "grpc")))
        # one endpoint, the workers' counts summed (each counts a call just after its answer leaves)
        wait_until("24 calls counted", lambda: scrape(running).get(ok, 0) >= 24)
        assert scrape(running)[ok] == 24
        # the HTTP port is shared the same way, and counted in the same sum
        for i in range(12):
            request_body = json.dumps({"texts": [f"good film {i}"]}).encode()
            post = urllib.request.Request(
                f"{running.http}/v1/predict", request_body, {"Content-Type": "application/json"}
            )
            assert json.loads(urllib.request.urlopen(post, timeout=PATIENCE_S).read())["predictions"]
        http_ok = ("sentiment_requests_total", (("code", "OK"), ("method", PREDICT), ("protocol", "http")))
        wait_until("12 HTTP calls counted", lambda: scrape(running).get(http_ok, 0) >= 12)

        codes: list[str] = []

        async def caller(stub: sentiment_pb2_grpc.SentimentServiceStub) -> None:
            for _ in range(400):  # bounded: stops by itself
                try:
                    await stub.Predict(pb.PredictRequest(texts=["a fine film"]), timeout=PATIENCE_S)
                    codes.append("OK")
                except grpc.RpcError as err:
                    codes.append(err.code().name)
                    if err.code() == grpc.StatusCode.UNAVAILABLE:
                        return

        channels = [grpc.aio.insecure_channel(running.target) for _ in range(8)]
        try:
            callers = [
                asyncio.create_task(caller(sentiment_pb2_grpc.SentimentServiceStub(c))) for c in channels
            ]
            # the signal comes once calls are flowing
            await eventually("32 calls answered", lambda: codes.count("OK") >= 32)
            running.process.send_signal(signal.SIGTERM)
            await asyncio.gather(*callers)
        finally:
            for opened in channels:
                await opened.close()
        exit_code = await asyncio.to_thread(running.process.wait, PATIENCE_S)
    finally:
        running.stop()
    log = running.log()
    assert exit_code == 0, log
    assert "all 2 workers drained and exited 0" in log
    answered = [json.loads(m) for m in re.findall(r"calls answered: (\{.*\})", log)]
    assert len(answered) == 2
    per_worker = [a[PREDICT].get("OK", 0) for a in answered]
    assert all(count > 0 for count in per_worker), per_worker
    # every call a worker took in was answered; the clients saw each OK the workers counted
    assert sum(per_worker) == 24 + 12 + codes.count("OK")  # gRPC and HTTP calls before the signal
    assert set(codes) <= {"OK", "UNAVAILABLE", "CANCELLED"}
