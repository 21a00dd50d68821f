"""What half-open connections cost a normal caller: its latency with and without 500 of them.

    python -m bench.half_open --model-dir models/sentiment

Starts the server (defaults plus --server-flags; the handshake timeout is what closes connections
that never send the HTTP/2 preface), then measures one caller sending a short text every 10 ms for
--duration seconds, first alone and then while --connections TCP connections that never speak are
opened at once and held until the server closes them. Prints the caller's p50, p99 and max in each
phase, how many of the held connections the server closed, and how long that took (median, max).
Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from bench.run import python, server_args, start, stop
from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from sentiment_client.pb.sentiment.v1 import sentiment_pb2_grpc


def caller(target: str, duration_s: float) -> dict[str, float]:
    """One text every 10 ms for duration_s; latency figures in ms."""
    latencies: list[float] = []
    with grpc.insecure_channel(target) as channel:
        stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
        request = pb.PredictRequest(texts=["short and sweet"])
        stub.Predict(request, timeout=30)
        end = time.monotonic() + duration_s
        while time.monotonic() < end:
            sent = time.perf_counter()
            stub.Predict(request, timeout=30)
            latencies.append(time.perf_counter() - sent)
            time.sleep(0.01)
    latencies.sort()
    return {
        "calls": len(latencies),
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[int(0.99 * (len(latencies) - 1))],
        "max_ms": 1000 * latencies[-1],
    }


def closes(sockets: list[socket.socket], limit_s: float) -> list[float]:
    """Seconds from now until the server closed each socket (EOF or reset on its read end), for
    those it closed within limit_s; closes each one it closed."""
    began = time.monotonic()
    open_ = {sock.fileno(): sock for sock in sockets}
    closed_after_s: list[float] = []
    while open_ and time.monotonic() - began < limit_s:
        readable, _, _ = select.select(list(open_.values()), [], [], 0.1)
        for sock in readable:
            try:
                data = sock.recv(4096)
            except OSError:
                data = b""
            if not data:
                closed_after_s.append(time.monotonic() - began)
                del open_[sock.fileno()]
                sock.close()
    return closed_after_s


class HalfOpen(threading.Thread):
    """Opens `count` connections that never send a byte and notes when the server closes each."""

    def __init__(self, port: int, count: int, limit_s: float) -> None:
        super().__init__(daemon=True)
        self.port, self.count, self.limit_s = port, count, limit_s
        self.closed_after_s: list[float] = []

    def run(self) -> None:
        sockets = [socket.create_connection(("127.0.0.1", self.port), timeout=30) for _ in range(self.count)]
        try:
            self.closed_after_s = closes(sockets, self.limit_s)
        finally:
            for sock in sockets:
                sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=Path("models/sentiment"))
    parser.add_argument("--server-flags", default="", help="extra flags for the server")
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per phase")
    args = parser.parse_args()
    server, port = start(python(*server_args(args.model_dir, *args.server_flags.split())))
    target = f"127.0.0.1:{port}"
    results: dict[str, Any] = {}
    try:
        results["alone"] = caller(target, args.duration)
        attacker = HalfOpen(port, args.connections, limit_s=args.duration + 60)
        attacker.start()
        results["with_half_open"] = caller(target, args.duration)
        attacker.join()
        closed = sorted(attacker.closed_after_s)
        results["half_open"] = {
            "opened": args.connections,
            "closed_by_server": len(closed),
            "closed_median_s": statistics.median(closed) if closed else None,
            "closed_max_s": closed[-1] if closed else None,
        }
    finally:
        stop(server)
    for name, figures in results.items():
        shown = ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items())
        print(f"{name:<15} {shown}", flush=True)
    print(json.dumps(results), file=sys.stderr)


if __name__ == "__main__":
    main()
