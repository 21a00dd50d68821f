"""Soak: minutes of mixed load against one server; memory and tail latency must hold steady.

    python -m bench.soak --model-dir models/sentiment --duration 300

Mixed load, all at once: single-text calls, 16-text calls, streams with several requests in flight,
summary attention and full attention, each caller pausing briefly between calls. Every `--window`
seconds it prints the window's calls, errors, p50/p99 and the server's resident memory. At the end
it compares the last window with the first after warm-up and exits 1 when a target is missed:
resident memory grew 10% or more, any call failed, or p99 moved 20% or more.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

import grpc

from bench.report import start_ours
from bench.run import stop
from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from sentiment_client.pb.sentiment.v1 import sentiment_pb2_grpc

WORDS = "the film was a great sad brilliant dull story with moving acting and awful plot twists".split()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


class Window:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}


async def soak(target: str, pid: int, duration: float, window_s: float, pause: float) -> list[dict]:
    windows: list[Window] = [Window()]
    rows: list[dict] = []
    stop_at = time.perf_counter() + duration
    texts = [" ".join(WORDS[i % 7 : i % 7 + 3 + i % 11]) for i in range(100)]

    def record(began: float, error: grpc.aio.AioRpcError | None = None) -> None:
        current = windows[-1]
        if error is None:
            current.latencies.append(time.perf_counter() - began)
        else:
            current.errors[error.code().name] = current.errors.get(error.code().name, 0) + 1

    async with grpc.aio.insecure_channel(target) as channel:
        stub = sentiment_pb2_grpc.SentimentServiceStub(channel)

        async def unary(count: int, attention: int, seed: int) -> None:
            position = seed
            while time.perf_counter() < stop_at:
                batch = [texts[(position + i) % len(texts)] for i in range(count)]
                position += count
                began = time.perf_counter()
                try:
                    answer = await stub.Predict(
                        pb.PredictRequest(texts=batch, attention=attention), timeout=30
                    )  # type: ignore[arg-type]
                    assert len(answer.predictions) == count
                    record(began)
                except grpc.aio.AioRpcError as err:
                    record(began, err)
                await asyncio.sleep(pause)

        async def stream(in_flight: int) -> None:
            while time.perf_counter() < stop_at:
                call = stub.PredictStream(timeout=60)
                sent: dict[str, float] = {}
                for i in range(in_flight):
                    sent[str(i)] = time.perf_counter()
                    await call.write(
                        pb.PredictStreamRequest(
                            request_id=str(i), request=pb.PredictRequest(texts=[texts[i]])
                        )
                    )
                await call.done_writing()
                try:
                    async for response in call:
                        if response.WhichOneof("result") == "error":
                            windows[-1].errors["stream_item"] = windows[-1].errors.get("stream_item", 0) + 1
                        else:
                            record(sent[response.request_id])
                except grpc.aio.AioRpcError as err:
                    record(0.0, err)
                await asyncio.sleep(pause)

        async def sampler() -> None:
            started = time.perf_counter()
            while time.perf_counter() < stop_at:
                await asyncio.sleep(min(window_s, max(0.0, stop_at - time.perf_counter())))
                done, windows[-1:] = windows[-1], [Window()]
                ordered = sorted(done.latencies)
                row = {
                    "t_s": round(time.perf_counter() - started),
                    "calls": len(ordered),
                    "errors": done.errors,
                    "p50_ms": round(1000 * statistics.median(ordered), 1) if ordered else None,
                    "p99_ms": round(1000 * ordered[int(0.99 * (len(ordered) - 1))], 1) if ordered else None,
                    "rss_mib": round(rss_mib(pid), 1),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)

        await asyncio.gather(
            *(unary(1, pb.ATTENTION_MODE_NONE, seed) for seed in range(4)),
            unary(16, pb.ATTENTION_MODE_NONE, 5),
            unary(2, pb.ATTENTION_MODE_SUMMARY, 6),
            unary(1, pb.ATTENTION_MODE_FULL, 7),
            stream(8),
            stream(8),
            sampler(),
        )
    return rows


def verdict(rows: list[dict]) -> dict:
    """First full window after warm-up against the last one."""
    first, last = rows[1], rows[-1]
    errors = sum(sum(r["errors"].values()) for r in rows)
    growth = last["rss_mib"] / first["rss_mib"] - 1
    p99_change = last["p99_ms"] / first["p99_ms"] - 1
    return {
        "calls": sum(r["calls"] for r in rows),
        "errors": errors,
        "rss_start_mib": first["rss_mib"],
        "rss_end_mib": last["rss_mib"],
        "rss_growth": round(growth, 4),
        "p99_start_ms": first["p99_ms"],
        "p99_end_ms": last["p99_ms"],
        "p99_change": round(p99_change, 4),
        "passed": errors == 0 and growth < 0.10 and abs(p99_change) < 0.20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=Path("models/sentiment"))
    parser.add_argument("--duration", type=float, default=300.0)
    parser.add_argument("--window", type=float, default=30.0, help="seconds per reported window")
    parser.add_argument("--pause", type=float, default=0.005, help="each caller's pause between calls, s")
    args = parser.parse_args()
    if args.duration < 3 * args.window:
        parser.error("--duration must hold at least three windows (warm-up, first, last)")
    server, port, _, _ = start_ours([str(args.model_dir)])
    try:
        rows = asyncio.run(soak(f"127.0.0.1:{port}", server.pid, args.duration, args.window, args.pause))
    finally:
        stop(server)
    result = verdict(rows)
    print(json.dumps(result), flush=True)
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
