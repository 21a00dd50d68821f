"""What one heavy caller costs the others: a light call every 20 ms during the heaviest legal request.

    python -m bench.bystander --model-dir models/sentiment

Starts the server (defaults, or --server-flags), then for each heavy request (the limits' largest:
256 texts of 20,000 characters without attention; with full attention, as many such texts as the
message limit lets the server answer, which its refusal names) sends it once while a light caller
sends one short text every 20 ms. Prints the light call's latency while the heavy request ran
(p50, p99, max), the heavy request's time, and the server's resident memory before and at its peak.
Asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import grpc

from bench.run import python, server_args, start, stop
from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from sentiment_client.pb.sentiment.v1 import sentiment_pb2_grpc

HEAVY_TEXT = ("an endlessly long and winding review of a film that goes on and on " * 300)[:20_000]
LIGHT_TEXT = "short and sweet"


def memory_mib(pid: int) -> tuple[float, float]:
    """Resident memory now and at its peak (VmRSS, VmHWM) of process `pid`, in MiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


async def heavy_with_bystander(target: str, count: int, attention: int) -> dict[str, Any]:
    options = [("grpc.max_receive_message_length", 64 << 20)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
        await stub.Predict(pb.PredictRequest(texts=[LIGHT_TEXT]), timeout=30)
        started = time.perf_counter()
        heavy = asyncio.ensure_future(
            stub.Predict(pb.PredictRequest(texts=[HEAVY_TEXT] * count, attention=attention), timeout=600)
        )
        light: list[float] = []
        while not heavy.done():
            sent = time.perf_counter()
            await stub.Predict(pb.PredictRequest(texts=[LIGHT_TEXT]), timeout=60)
            light.append(time.perf_counter() - sent)
            await asyncio.sleep(0.02)
        answer = await heavy
        heavy_s = time.perf_counter() - started
    light.sort()
    return {
        "heavy_texts": len(answer.predictions),
        "heavy_s": heavy_s,
        "light_calls": len(light),
        "light_p50_ms": 1000 * statistics.median(light),
        "light_p99_ms": 1000 * light[int(0.99 * (len(light) - 1))],
        "light_max_ms": 1000 * light[-1],
    }


async def most_full_attention_texts(target: str) -> int:
    """How many heavy texts a full-attention answer may hold: what the server's refusal says."""
    options = [("grpc.max_receive_message_length", 64 << 20)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
        try:
            await stub.Predict(
                pb.PredictRequest(texts=[HEAVY_TEXT] * 256, attention=pb.ATTENTION_MODE_FULL), timeout=600
            )
        except grpc.aio.AioRpcError as err:
            found = re.search(r"send at most (\d+) such texts", err.details() or "")
            if found:
                return int(found.group(1))
            raise
    return 256


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=Path("models/sentiment"))
    parser.add_argument("--server-flags", default="", help="extra flags for the server")
    args = parser.parse_args()
    server, port = start(python(*server_args(args.model_dir, *args.server_flags.split())))
    target = f"127.0.0.1:{port}"
    results: dict[str, Any] = {}
    try:
        results["rss_idle_mib"], _ = memory_mib(server.pid)
        results["none_256"] = asyncio.run(heavy_with_bystander(target, 256, pb.ATTENTION_MODE_NONE))
        fitting = asyncio.run(most_full_attention_texts(target))
        results[f"full_{fitting}"] = asyncio.run(
            heavy_with_bystander(target, fitting, pb.ATTENTION_MODE_FULL)
        )
        results["rss_now_mib"], results["rss_peak_mib"] = memory_mib(server.pid)
    finally:
        stop(server)
    for name, figures in results.items():
        shown = (
            ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items())
            if isinstance(figures, dict)
            else f"{figures:.0f}"
        )
        print(f"{name:<18} {shown}", flush=True)
    print(json.dumps(results), file=sys.stderr)


if __name__ == "__main__":
    main()
