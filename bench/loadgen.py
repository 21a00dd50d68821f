"""Closed-loop load generator: N concurrent callers send Predict for a fixed time; prints JSON.

Run in its own process so the server under test and the load share the machine as they would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path

import grpc

from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from sentiment_client.pb.sentiment.v1 import sentiment_pb2_grpc


async def run(
    target: str, sentences: list[str], concurrency: int, per_request: int, duration: float, channels: int = 1
) -> dict:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    batch_sizes: list[int] = []
    # each channel is one connection: several reach several workers of a --workers server
    options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.use_local_subchannel_pool", 1)]
    opened = [grpc.aio.insecure_channel(target, options=options) for _ in range(channels)]
    try:
        stubs = [sentiment_pb2_grpc.SentimentServiceStub(channel) for channel in opened]
        for stub in stubs:  # connect, warm
            await stub.Predict(pb.PredictRequest(texts=sentences[:per_request]), timeout=30)
        stop_at = time.perf_counter() + duration

        async def caller(offset: int) -> None:
            stub = stubs[offset % len(stubs)]
            position = offset * per_request
            while time.perf_counter() < stop_at:
                texts = [sentences[(position + i) % len(sentences)] for i in range(per_request)]
                position += per_request * concurrency
                started = time.perf_counter()
                try:
                    response = await stub.Predict(pb.PredictRequest(texts=texts), timeout=30)
                except grpc.RpcError as err:
                    errors[err.code().name] = errors.get(err.code().name, 0) + 1
                    continue
                latencies.append(time.perf_counter() - started)
                if response.predictions and response.predictions[0].HasField("batch"):
                    batch_sizes.append(response.predictions[0].batch.batch_size)

        started = time.perf_counter()
        await asyncio.gather(*(caller(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - started
    finally:
        for channel in opened:
            await channel.close()
    latencies.sort()
    return {
        "requests": len(latencies),
        "sentences_per_s": len(latencies) * per_request / elapsed,
        "p50_ms": 1000 * statistics.median(latencies) if latencies else None,
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))] if latencies else None,
        "mean_batch_size": statistics.fmean(batch_sizes) if batch_sizes else None,
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True)
    parser.add_argument("--sentences", type=Path, required=True, help="JSON list of texts")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--texts-per-request", type=int, default=1)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--channels", type=int, default=1, help="connections the callers share")
    args = parser.parse_args()
    sentences = json.loads(args.sentences.read_text())
    result = asyncio.run(
        run(args.target, sentences, args.concurrency, args.texts_per_request, args.duration, args.channels)
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
