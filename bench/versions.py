"""What a model version change costs callers, and what a shadow costs them, in one run.

    python -m bench.versions --model-dir models/sentiment [--callers 64] [--rounds 3]

Switch: a server follows a copy of the model directory (--model-control poll); 64 callers call
Predict in a closed loop; after a steady stretch the next version (a copy of the served one) is
published as the exporter does (staging directory, then rename). Latencies are split by when the
call started: steady (before the version appeared), and during the switch (from its appearance until
the old version was unloaded, plus one second). Every call's answer names its version.

Shadow: a server with --model-control explicit serves version 1; the same load runs with no shadow,
then with version 2 loaded as a shadow at --shadow-share, alternately for --rounds rounds: the
medians of each side's p50 and p99 are compared.

The callers run in this process (grpc.aio), as the tests' do. Writes bench/versions.json and
bench/VERSIONS.md. Nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
from prometheus_client.parser import text_string_to_metric_families

from bench.report import load
from bench.run import ROOT, medians, sentences_file, stop
from model_contract import versions as model_versions
from sentiment_client import AsyncSentimentClient
from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from sentiment_client.pb.sentiment.v1 import sentiment_pb2_grpc

READY = re.compile(r"READY port=(\d+) metrics_port=(\d+|None)")


def start(root: Path, *flags: str, metrics: bool = False) -> tuple[subprocess.Popen[str], int, int]:
    """A server on the model root; (process, gRPC port, metrics port or 0)."""
    command = [
        sys.executable, "-m", "service", "--model-dir", str(root), "--host", "127.0.0.1", "--port", "0",
        "--metrics-host", "127.0.0.1", "--metrics-port", "0" if metrics else "-1", "--http-port", "-1",
        "--log-level", "INFO", *flags,
    ]  # fmt: skip
    log = (root.parent / f"server-{time.monotonic_ns()}.log").open("w")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True, cwd=ROOT)
    assert process.stdout is not None
    match = READY.search(process.stdout.readline())
    if not match:
        process.kill()
        raise RuntimeError(f"{command} did not start; see {log.name}")
    metrics_port = 0 if match.group(2) == "None" else int(match.group(2))
    return process, int(match.group(1)), metrics_port


def publish(root: Path, version: int) -> None:
    staging = root / f".staging-{version}"
    shutil.copytree(root / "1", staging)
    staging.rename(root / str(version))


class Callers:
    """Closed-loop callers; each call's (start, seconds, version or error code)."""

    def __init__(self, port: int, texts: list[str], callers: int) -> None:
        self.port, self.texts, self.callers = port, texts, callers
        self.calls: list[tuple[float, float, int | str]] = []
        self.stop = asyncio.Event()

    async def run(self) -> None:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            stub = sentiment_pb2_grpc.SentimentServiceStub(channel)

            async def caller(index: int) -> None:
                n = index
                while not self.stop.is_set():
                    request = pb.PredictRequest(texts=[self.texts[n % len(self.texts)]])
                    n += self.callers
                    began = time.monotonic()
                    try:
                        answer = await stub.Predict(request, timeout=60)
                        outcome: int | str = answer.model_version
                    except grpc.aio.AioRpcError as err:
                        outcome = err.code().name
                    self.calls.append((began, time.monotonic() - began, outcome))

            await asyncio.gather(*(caller(i) for i in range(self.callers)))


def percentiles(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    if not ordered:
        return {"calls": 0, "p50_ms": float("nan"), "p99_ms": float("nan")}

    def at(share: float) -> float:
        return 1000 * ordered[min(len(ordered) - 1, int(share * len(ordered)))]

    return {"calls": len(ordered), "p50_ms": at(0.5), "p99_ms": at(0.99)}


async def switch(root: Path, texts: list[str], callers: int, steady_s: float) -> dict[str, Any]:
    process, port, _ = start(root, "--model-control", "poll", "--poll-interval-s", "0.5")
    log_path = sorted(root.parent.glob("server-*.log"))[-1]
    load = Callers(port, texts, callers)
    try:
        task = asyncio.create_task(load.run())
        await asyncio.sleep(steady_s)
        published = time.monotonic()
        publish(root, 2)
        while "version 1 unloaded" not in log_path.read_text():
            await asyncio.sleep(0.05)
        unloaded = time.monotonic()
        await asyncio.sleep(steady_s / 2)
        load.stop.set()
        await task
    finally:
        stop(process)
    warm = load.calls[0][0] + steady_s / 5  # the first moments fill the queue: not steady yet
    steady = [s for began, s, _ in load.calls if warm <= began < published]
    during = [s for began, s, _ in load.calls if published <= began < unloaded + 1.0]
    errors = [o for _, _, o in load.calls if isinstance(o, str)]
    return {
        "steady": percentiles(steady),
        "during_switch": percentiles(during),
        "switch_seconds": round(unloaded - published, 3),
        "answered_by": {str(v): sum(o == v for _, _, o in load.calls) for v in (1, 2)},
        "errors": len(errors),
        "every_answer_from_v1_or_v2": all(o in (1, 2) for _, _, o in load.calls),
    }


def shadow_counts(metrics_port: int) -> dict[str, float]:
    """Texts compared on the shadow, and sampled calls it skipped, from the server's metrics."""
    families = ("sentiment_shadow_texts", "sentiment_shadow_skipped_calls")
    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(body):
        if family.name in families:
            for sample in family.samples:
                key = sample.labels.get("agreement") or "skipped_" + sample.labels.get("reason", "")
                counts[key] = counts.get(key, 0.0) + sample.value
    return counts


async def shadow(root: Path, texts_file: Path, share: float, rounds: int, span_s: float) -> dict[str, Any]:
    """Callers' figures with and without a shadow: at half the measured capacity (Poisson arrivals,
    where a replica keeps up) and at 64 closed-loop callers (saturated)."""
    flags = ("--model-control", "explicit", "--versions", "1", "--shadow-share", str(share))
    process, port, metrics_port = start(root, *flags, metrics=True)
    knobs = {"processes": 2, "channels": 4}
    sides: dict[str, dict[str, list[dict[str, Any]]]] = {}
    try:
        capacity = load(port, texts_file, span_s, concurrency=64, **knobs)["sentences_per_s"]
        loads = {"half capacity": {"rate": round(capacity / 2, 1)}, "64 callers": {"concurrency": 64}}
        sides = {name: {"without": [], "with": []} for name in loads}
        async with AsyncSentimentClient(f"127.0.0.1:{port}", timeout_s=120) as client:
            for _ in range(rounds):
                for side in ("without", "with"):
                    if side == "with":
                        await client.load([2], shadow=True)
                    for name, knob in loads.items():
                        before = shadow_counts(metrics_port)
                        result = await asyncio.to_thread(load, port, texts_file, span_s, **knob, **knobs)
                        after = shadow_counts(metrics_port)
                        result["shadow"] = {k: after[k] - before.get(k, 0.0) for k in after}
                        sides[name][side].append(result)
                    if side == "with":
                        await client.unload(2)
    finally:
        stop(process)
    median = medians(sides)
    return {"share": share, "capacity_per_s": capacity, "rounds": sides, "median": median}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=Path("models/sentiment"))
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--steady-s", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shadow-share", type=float, default=0.1)
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "sentiment-service")
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    args = parser.parse_args()
    source = args.model_dir.resolve()
    served = model_versions(source)[-1]
    (args.out / "results").mkdir(parents=True, exist_ok=True)
    texts_file = sentences_file(args.out / "results", args.cache_dir, args.sentences)
    texts = json.loads(texts_file.read_text())
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "switch" / "sentiment"
        shutil.copytree(source / str(served), root / "1")
        switched = asyncio.run(switch(root, texts, args.callers, args.steady_s))
        root = Path(scratch) / "shadow" / "sentiment"
        shutil.copytree(source / str(served), root / "1")
        publish(root, 2)
        shadowed = asyncio.run(shadow(root, texts_file, args.shadow_share, args.rounds, args.steady_s))
    figures = {"callers": args.callers, "switch": switched, "shadow": shadowed}
    (args.out / "versions.json").write_text(json.dumps(figures, indent=2) + "\n")
    steady, during = switched["steady"], switched["during_switch"]
    rows = []
    for name, by_side in shadowed["median"].items():
        without, with_ = by_side["without"], by_side["with"]
        compared = sum(
            r["shadow"].get("agree", 0) + r["shadow"].get("disagree", 0)
            for r in shadowed["rounds"][name]["with"]
        )
        busy = sum(r["shadow"].get("skipped_busy", 0) for r in shadowed["rounds"][name]["with"])
        rows.append(
            f"| {name} | {without['sentences_per_s']:.0f} / {with_['sentences_per_s']:.0f} | "
            f"{without['p50_ms']:.1f} / {with_['p50_ms']:.1f} | "
            f"{without['p99_ms']:.1f} / {with_['p99_ms']:.1f} | "
            f"{with_['p99_ms'] / without['p99_ms']:.2f} | {compared:.0f} | {busy:.0f} |"
        )
    table = "\n".join(rows)
    text = f"""# What a version change and a shadow cost callers

`python -m bench.versions`, in one run. Raw figures: bench/versions.json.

Switch: {args.callers} closed-loop callers of Predict (in this process); --model-control poll; the
new version published after {args.steady_s:g} s of steady load; the switch took
{switched["switch_seconds"]} s from the directory appearing to the old version unloaded;
{switched["errors"]} calls failed; answers by version: {switched["answered_by"]}.

| calls that started | calls | p50 ms | p99 ms |
|---|---|---|---|
| steady, before | {steady["calls"]} | {steady["p50_ms"]:.1f} | {steady["p99_ms"]:.1f} |
| during the switch | {during["calls"]} | {during["p50_ms"]:.1f} | {during["p99_ms"]:.1f} |

p99 during the switch / steady p99: {during["p99_ms"] / steady["p99_ms"]:.2f}

Shadow at {args.shadow_share:.0%} of calls (bench/loadgen.py over KServe v2): medians of
{args.rounds} rounds of {args.steady_s:g} s each, without / with a shadow loaded; capacity measured
first: {shadowed["capacity_per_s"]:.0f} sentences/s.

| load | sentences/s | p50 ms | p99 ms | p99 with / without | texts compared | sampled calls skipped (busy) |
|---|---|---|---|---|---|---|
{table}
"""
    (args.out / "VERSIONS.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
