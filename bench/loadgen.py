"""Load generator: closed loop (N callers, each sends when its last answer came) or open loop
(Poisson arrivals at a given rate, whatever the answers do), over sentiment.v1 Predict or KServe v2
ModelInfer, on gRPC or HTTP (JSON: /v1/predict, /v2/models/NAME/infer), from several processes so
that the client is never the bottleneck. Prints one JSON line.

Latency in open loop counts from each call's planned arrival, so a client that falls behind shows
up as latency, never as a hidden pause. The client's own CPU use is reported (cores busy).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import grpc

from sentiment_client.pb.inference import grpc_predict_v2_pb2 as v2
from sentiment_client.pb.inference import grpc_predict_v2_pb2_grpc
from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from sentiment_client.pb.sentiment.v1 import sentiment_pb2_grpc

OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.use_local_subchannel_pool", 1)]
MAX_IN_FLIGHT = 4096  # open loop, per process: beyond it arrivals are counted as client_overflow


class Texts:
    """Short texts, with a share of long ones mixed in at random (fixed seed)."""

    def __init__(self, short: list[str], long: list[str], long_fraction: float, seed: int) -> None:
        self.short, self.long, self.fraction = short, long, long_fraction if long else 0.0
        self.rng = random.Random(seed)
        self.position = seed * 7919

    def take(self, count: int) -> list[str]:
        picked = []
        for _ in range(count):
            pool = self.long if self.fraction and self.rng.random() < self.fraction else self.short
            self.position += 1
            picked.append(pool[self.position % len(pool)])
        return picked


PRIORITIES = {"high": pb.PRIORITY_HIGH, "normal": pb.PRIORITY_NORMAL, "low": pb.PRIORITY_LOW}


EXPLAIN = {
    "none": pb.EXPLAIN_MODE_NONE,
    "shapley": pb.EXPLAIN_MODE_SHAPLEY,
    "occlusion": pb.EXPLAIN_MODE_OCCLUSION,
}


def caller_for(
    channel: grpc.aio.Channel, protocol: str, model: str, priority: str = "normal", explain: str = "none"
):
    """An async function texts -> None that makes one call and raises grpc.RpcError on failure."""
    if protocol == "sentiment":
        stub = sentiment_pb2_grpc.SentimentServiceStub(channel)

        async def predict(texts: list[str]) -> None:
            request = pb.PredictRequest(texts=texts, priority=PRIORITIES[priority], explain=EXPLAIN[explain])
            await stub.Predict(request, timeout=60)

        return predict
    v2stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)

    async def infer(texts: list[str]) -> None:
        tensor = v2.ModelInferRequest.InferInputTensor(
            name="text",
            datatype="BYTES",
            shape=[len(texts)],
            contents=v2.InferTensorContents(bytes_contents=[t.encode() for t in texts]),
        )
        await v2stub.ModelInfer(v2.ModelInferRequest(model_name=model, inputs=[tensor]), timeout=60)

    return infer


class HttpError(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def http_caller_for(session: aiohttp.ClientSession, base: str, protocol: str, model: str):
    """The same over HTTP/1.1 JSON: an async function texts -> None raising HttpError on failure."""
    if protocol == "sentiment":
        url = f"{base}/v1/predict"

        def body(texts: list[str]) -> dict[str, Any]:
            return {"texts": texts}
    else:
        url = f"{base}/v2/models/{model}/infer"

        def body(texts: list[str]) -> dict[str, Any]:
            return {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [len(texts)], "data": texts}]}

    async def post(texts: list[str]) -> None:
        async with session.post(url, json=body(texts)) as response:
            await response.read()
            if response.status != 200:
                raise HttpError(response.status)

    return post


async def drive(args: argparse.Namespace, index: int) -> dict[str, Any]:
    """One process's part of the load; returns its raw latencies (seconds) and counts."""
    short = json.loads(args.sentences.read_text())
    long = json.loads(args.long.read_text()) if args.long else []
    texts = Texts(short, long, args.long_fraction, seed=index + 1)
    latencies: list[float] = []
    lags: list[float] = []
    errors: dict[str, int] = {}
    channels = []
    session = None
    if args.http:
        timeout = aiohttp.ClientTimeout(total=60)
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout)
        calls = [http_caller_for(session, f"http://{args.target}", args.protocol, args.model)]
    else:
        channels = [grpc.aio.insecure_channel(args.target, options=OPTIONS) for _ in range(args.channels)]
        calls = [
            caller_for(channel, args.protocol, args.model, args.priority, args.explain)
            for channel in channels
        ]
    try:
        for call in calls:  # connect and warm every channel before the clock starts
            await call(short[: args.texts_per_request])
        await asyncio.sleep(max(0.0, args.start_at - time.time()))
        cpu_started = time.process_time()
        started = time.perf_counter()
        stop_at = started + args.duration

        async def one(call, planned: float) -> None:
            lags.append(time.perf_counter() - planned)
            try:
                await call(texts.take(args.texts_per_request))
            except grpc.RpcError as err:
                errors[err.code().name] = errors.get(err.code().name, 0) + 1
                return
            except (HttpError, aiohttp.ClientError, TimeoutError) as err:
                name = f"HTTP {err.status}" if isinstance(err, HttpError) else type(err).__name__
                errors[name] = errors.get(name, 0) + 1
                return
            latencies.append(time.perf_counter() - planned)

        if args.rate:
            rng = random.Random(1000 + index)
            rate = args.rate / args.processes
            planned = started
            pending: set[asyncio.Task[None]] = set()
            n = 0
            while True:
                planned += rng.expovariate(rate)
                if planned >= stop_at:
                    break
                await asyncio.sleep(max(0.0, planned - time.perf_counter()))
                if len(pending) >= MAX_IN_FLIGHT:
                    errors["client_overflow"] = errors.get("client_overflow", 0) + 1
                    continue
                task = asyncio.create_task(one(calls[n % len(calls)], planned))
                n += 1
                pending.add(task)
                task.add_done_callback(pending.discard)
            if pending:
                await asyncio.wait(pending)
        else:
            count = args.concurrency // args.processes + (index < args.concurrency % args.processes)

            async def loop(slot: int) -> None:
                call = calls[slot % len(calls)]
                while time.perf_counter() < stop_at:
                    await one(call, time.perf_counter())

            await asyncio.gather(*(loop(i) for i in range(count)))
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
    finally:
        for channel in channels:
            await channel.close()
        if session is not None:
            await session.close()
    return {"latencies": latencies, "lags": lags, "errors": errors, "elapsed": elapsed, "cpu_s": cpu}


def percentile(ordered: list[float], share: float) -> float | None:
    return 1000 * ordered[int(share * (len(ordered) - 1))] if ordered else None


def summarise(parts: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    latencies = sorted(x for part in parts for x in part["latencies"])
    lags = sorted(x for part in parts for x in part["lags"])
    elapsed = max(part["elapsed"] for part in parts)
    errors: dict[str, int] = {}
    for part in parts:
        for code, n in part["errors"].items():
            errors[code] = errors.get(code, 0) + n
    return {
        "requests": len(latencies),
        "sentences_per_s": len(latencies) * args.texts_per_request / elapsed,
        "offered_per_s": args.rate * args.texts_per_request if args.rate else None,
        "p50_ms": 1000 * statistics.median(latencies) if latencies else None,
        "p90_ms": percentile(latencies, 0.90),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": 1000 * latencies[-1] if latencies else None,
        "client_lag_p99_ms": percentile(lags, 0.99),
        "client_cpu_cores": sum(part["cpu_s"] for part in parts) / elapsed,
        "errors": errors,
    }


def arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True)
    parser.add_argument("--protocol", choices=["sentiment", "v2"], default="sentiment")
    parser.add_argument("--model", default="sentiment", help="model name for KServe v2")
    parser.add_argument(
        "--http", action="store_true", help="HTTP/1.1 JSON instead of gRPC (--target HOST:PORT)"
    )
    parser.add_argument("--sentences", type=Path, required=True, help="JSON list of texts")
    parser.add_argument("--long", type=Path, help="JSON list of long texts to mix in")
    parser.add_argument("--long-fraction", type=float, default=0.0, help="share of texts drawn from --long")
    parser.add_argument("--concurrency", type=int, default=64, help="closed loop: callers in all")
    parser.add_argument("--rate", type=float, default=0.0, help="open loop: requests/s in all (Poisson)")
    parser.add_argument("--texts-per-request", type=int, default=1)
    parser.add_argument(
        "--priority",
        choices=list(PRIORITIES),
        default="normal",
        help="sentiment.v1 over gRPC: the requests' priority",
    )
    parser.add_argument(
        "--explain", choices=list(EXPLAIN), default="none", help="sentiment.v1 over gRPC: explain each text"
    )
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--channels", type=int, default=1, help="connections per process")
    parser.add_argument("--processes", type=int, default=1, help="client processes sharing the load")
    parser.add_argument("--part", type=int, default=-1, help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, default=0.0, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main() -> None:
    args = arguments()
    if args.part >= 0:  # one process's share; the coordinator merges the raw figures
        print(json.dumps(asyncio.run(drive(args, args.part))))
        return
    start_at = time.time() + 1.5 + 0.5 * args.processes  # every part connected and warm by then
    command = [sys.executable, "-m", "bench.loadgen", *sys.argv[1:], "--start-at", str(start_at)]
    children = [
        subprocess.Popen([*command, "--part", str(i)], stdout=subprocess.PIPE, text=True)
        for i in range(args.processes)
    ]
    parts = []
    for child in children:
        out, _ = child.communicate()
        if child.returncode != 0:
            raise SystemExit(f"load generator part failed with exit code {child.returncode}")
        parts.append(json.loads(out.strip().splitlines()[-1]))
    print(json.dumps(summarise(parts, args)))


if __name__ == "__main__":
    main()
