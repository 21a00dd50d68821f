"""The published comparison: this server against the servers users would run instead, in one run.

    python -m bench report --model-dir models/sentiment [--duration 8] [--systems a,b]

Every system is called by the same load generator (bench/loadgen.py) over KServe v2 ModelInfer, on
gRPC and, for this server (fp32) and MLServer with batching, also on HTTP/JSON, on one machine:
- this server with its defaults, fp32 and int8;
- a naive server: a grpcio thread pool running ONNX Runtime once per request (bench/naive_server.py);
- MLServer 1.7.1 running the same model.onnx and tokenizer.json (bench/mlserver_runtime.py), with
  adaptive batching (32 texts, 5 ms) and with batching off, in its own environment (bench/peer.py);
- the ceilings: ONNX Runtime alone at batch 1 (every core) and on length-sorted batches of 32, and
  an empty grpc.aio server.
Every system is started first; then each load point runs against every system in turn, the order
rotated by one system from one point to the next. For each system: closed loop at 1, 4, 16 and 64
single-text callers; 64 callers with a long-review mix; open loop (Poisson arrivals) at 25, 50, 75
and 90% of its measured capacity; and its goodput at each latency target: the highest Poisson
arrival rate whose p99 stays within 100 ms, and within 50 ms (bisected from the open-loop points).
This server's batch size and padding ratio come from its /metrics after each run.
Writes bench/RESULTS.md, its plots in bench/figures/ and the raw figures as bench/results.json.
Nothing here asserts a speed: the targets are shown as ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench import peer
from bench.run import READY as EMPTY_READY
from bench.run import ROOT, measure, ort_latency, python, server_args, stop
from model_contract import versions as model_versions

CONCURRENCY = (1, 4, 16, 64)
LOADS = (0.25, 0.5, 0.75, 0.9)
LONG_FRACTION = 0.25
GOODPUT_P99_MS = (100, 50)  # the latency targets goodput is measured at
GOODPUT_STEPS = 4  # bisections between the last open-loop rate within the target and the next
SYSTEMS = (  # in the order of the first rotation
    "ours_fp32",
    "ours_fp32_http",
    "ours_int8",
    "naive",
    "mlserver_batching",
    "mlserver_batching_http",
    "mlserver_no_batching",
)
READY = re.compile(r"READY port=(\d+) metrics_port=(\d+|None) http_port=(\d+|None)")


def long_reviews(out: Path, cache_dir: Path, version_dir: Path, count: int = 200) -> Path:
    """Long reviews of 100 to 400 tokens, each made of test-split snippets of one label in a row."""
    from tokenizers import Tokenizer

    from model_export.data import load_corpus, split

    examples, _ = load_corpus(cache_dir)
    test = split(examples, seed=13).test
    tokenizer = Tokenizer.from_file(str(version_dir / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    rng = random.Random(5)
    by_label: dict[int, list[str]] = {}
    for example in test:
        by_label.setdefault(example.label, []).append(example.text)
    reviews = []
    for n in range(count):
        pool = by_label[n % len(by_label)]
        target = rng.randint(100, 400)
        parts: list[str] = []
        while len(tokenizer.encode(" ".join(parts)).ids) < target:
            parts.append(rng.choice(pool))
        reviews.append(" ".join(parts))
    path = out / "long_reviews.json"
    path.write_text(json.dumps(reviews))
    return path


def start_ours(flags: list[str]) -> tuple[subprocess.Popen[str], int, int, int]:
    """This server; (process, gRPC port, metrics port, HTTP port)."""
    args = server_args(Path(flags[0]), *flags[1:], "--http-port", "0")
    metrics = args.index("--metrics-port")
    args[metrics + 1] = "0"
    process = subprocess.Popen(
        python(*args), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT
    )
    assert process.stdout is not None
    match = READY.search(process.stdout.readline())
    if not match:
        process.kill()
        raise RuntimeError(f"{args} did not start")
    return process, int(match.group(1)), int(match.group(2)), int(match.group(3))


def scrape(
    metrics_port: int | None,
    families: tuple[str, ...] = ("sentiment_batch_size", "sentiment_batch_padding_ratio"),
) -> dict[str, float]:
    """Sums and counts of the histograms `families` (by default batch size and padding ratio)."""
    if metrics_port is None:
        return {}
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    figures: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name in families:
            for sample in family.samples:
                if sample.name.endswith(("_sum", "_count")):
                    figures[sample.name] = figures.get(sample.name, 0.0) + sample.value  # all labels
    return figures


def batch_figures(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    def mean(name: str) -> float | None:
        count = after.get(f"{name}_count", 0) - before.get(f"{name}_count", 0)
        return (after[f"{name}_sum"] - before.get(f"{name}_sum", 0)) / count if count else None

    if not after:
        return {}
    return {
        "mean_batch_size": mean("sentiment_batch_size"),
        "mean_padding": mean("sentiment_batch_padding_ratio"),
    }


def load(port: int, texts: Path, duration: float, http: bool = False, **knobs: Any) -> dict[str, Any]:
    command = python(
        "bench.loadgen",
        "--target",
        f"127.0.0.1:{port}",
        "--protocol",
        "v2",
        "--sentences",
        str(texts),
        "--duration",
        str(duration),
    )
    for key, value in knobs.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    if http:
        command.append("--http")
    return measure(command)


@dataclass(frozen=True)
class Target:
    """One system as the load generator reaches it."""

    name: str
    port: int
    metrics_port: int | None = None  # this server's, for the batch figures
    http: bool = False


def run_point(target: Target, files: dict[str, Path], duration: float, label: str, **knobs: Any) -> dict:
    """One load point against one system; prints its figures as they come."""
    before = scrape(target.metrics_port)
    result = load(target.port, files["short"], duration, target.http, **knobs)
    result.update(batch_figures(before, scrape(target.metrics_port)))
    shown = ", ".join(
        f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.items() if v is not None
    )
    print(f"{target.name:<24} {label:<16} {shown}", flush=True)
    return result


class Rotation:
    """The systems in turn, each load point starting one system later than the last, so that the
    machine's drift over the run falls on every system alike."""

    def __init__(self, targets: list[Target]) -> None:
        self.targets = targets
        self.step = 0

    def next(self) -> list[Target]:
        k = self.step % len(self.targets)
        self.step += 1
        return self.targets[k:] + self.targets[:k]


def within(result: dict[str, Any], target_ms: int) -> bool:
    """Every call answered, and p99 within the goodput target."""
    p99 = result.get("p99_ms")
    return p99 is not None and p99 <= target_ms and not result["errors"]


class Bisection:
    """The highest Poisson rate (one text per request) whose p99 is within target_ms: starts from the
    open-loop points already measured, then halves the gap between the last rate within and the
    next one above."""

    def __init__(self, figures: dict[str, Any], target_ms: int) -> None:
        self.target_ms = target_ms
        points = sorted(((r["offered_per_s"], r) for r in figures["open"].values()), key=lambda p: p[0])
        good = [(rate, r) for rate, r in points if within(r, target_ms)]
        self.low, self.best = (good[-1][0], good[-1][1]) if good else (0.0, None)
        above = [rate for rate, r in points if rate > self.low and not within(r, target_ms)]
        self.high = above[0] if above else figures["capacity"] * 1.2

    def next_rate(self) -> float:
        return round((self.low + self.high) / 2, 1)

    def record(self, rate: float, result: dict[str, Any]) -> None:
        if within(result, self.target_ms):
            self.low, self.best = rate, result
        else:
            self.high = rate

    def result(self) -> dict[str, Any]:
        return {
            "rate_per_s": self.low,
            "p99_ms": None if self.best is None else self.best["p99_ms"],
            "target_p99_ms": self.target_ms,
        }


def measure_all(
    targets: list[Target], files: dict[str, Path], duration: float, steps: int = GOODPUT_STEPS
) -> dict[str, Any]:
    """Every load shape against every system, rotated point by point (Rotation); `steps`
    bisections per goodput."""
    figures: dict[str, Any] = {t.name: {"closed": {}, "open": {}, "goodput": {}} for t in targets}
    turns = Rotation(targets)
    for callers in CONCURRENCY:
        many = callers >= 16
        for target in turns.next():
            figures[target.name]["closed"][callers] = run_point(
                target,
                files,
                duration,
                f"{callers} callers",
                concurrency=callers,
                processes=2 if many else 1,
                channels=4 if many else 1,
            )
    for target in turns.next():
        figures[target.name]["long_mix_64"] = run_point(
            target,
            files,
            duration,
            "64 long mix",
            concurrency=64,
            processes=2,
            channels=4,
            long=files["long"],
            long_fraction=LONG_FRACTION,
        )
    for target in targets:
        closed = figures[target.name]["closed"].values()
        figures[target.name]["capacity"] = max(result["sentences_per_s"] for result in closed)
    for share in LOADS:
        for target in turns.next():
            rate = round(figures[target.name]["capacity"] * share, 1)
            figures[target.name]["open"][share] = run_point(
                target, files, duration, f"open {share:.0%}", rate=rate, processes=2, channels=4
            )
    for target_ms in GOODPUT_P99_MS:
        searches = {t.name: Bisection(figures[t.name], target_ms) for t in targets}
        for _ in range(steps):
            for target in turns.next():
                search = searches[target.name]
                rate = search.next_rate()
                label = f"p99<={target_ms:.0f}: {rate:.0f}/s"
                search.record(
                    rate, run_point(target, files, duration, label, rate=rate, processes=2, channels=4)
                )
        for name, search in searches.items():
            figures[name]["goodput"][target_ms] = search.result()
    return figures


def machine(version_dir: Path) -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    config = json.loads((version_dir / "config.json").read_text())
    return {
        "cores": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
        "python": platform.python_version(),
        "onnxruntime": version("onnxruntime"),
        "grpcio": version("grpcio"),
        "mlserver": peer.MLSERVER,
        "model": str(version_dir),
        "model_preset": config.get("preset"),
        "model_base": config.get("training", {}).get("pretrained"),
        "max_length": config.get("max_length"),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model-dir", type=Path, default=Path("models/sentiment"))
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per load point")
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "sentiment-service")
    parser.add_argument("--out", type=Path, default=ROOT / "bench", help="where RESULTS.md goes")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset to run")
    parser.add_argument("--goodput-steps", type=int, default=GOODPUT_STEPS, help="bisections per goodput")
    args = parser.parse_args(argv)
    from bench.run import ort_alone, sentences_file

    versions = model_versions(args.model_dir)
    version_dir = args.model_dir / str(versions[-1])
    results_dir = args.out / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "short": sentences_file(results_dir, args.cache_dir, args.sentences),
        "long": long_reviews(results_dir, args.cache_dir, version_dir),
    }
    report: dict[str, Any] = {
        "machine": machine(version_dir),
        "duration_s": args.duration,
        "long_fraction": LONG_FRACTION,
        "systems": {},
    }
    print(json.dumps(report["machine"]), flush=True)
    report["ort_batch1"] = ort_latency(version_dir, files["short"], args.duration)
    print(f"{'onnx runtime alone':<24} batch 1        {report['ort_batch1']}", flush=True)
    report["ort_sorted32"] = ort_alone(version_dir, files["short"], args.duration, "sorted32")
    print(f"{'onnx runtime alone':<24} sorted 32      {report['ort_sorted32']}", flush=True)
    empty = subprocess.Popen(python("bench.empty_server"), stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert empty.stdout is not None
        port = int(EMPTY_READY.search(empty.stdout.readline()).group(1))  # type: ignore[union-attr]
        report["empty_server"] = {
            "1": load(port, files["short"], args.duration, concurrency=1),
            "64": load(port, files["short"], args.duration, concurrency=64, processes=2, channels=4),
        }
        print(f"{'empty grpc.aio server':<24} {report['empty_server']}", flush=True)
    finally:
        stop(empty)
    wanted = [name for name in SYSTEMS if name in args.systems.split(",")]
    with contextlib.ExitStack() as running:
        targets = start_systems(wanted, args, version_dir, running)
        chosen = [t for t in targets if t.name in wanted]
        report["systems"] = measure_all(chosen, files, args.duration, args.goodput_steps)
    (args.out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    from bench.publish import write

    write(report, args.out)
    print(f"wrote {args.out / 'RESULTS.md'}")


def start_systems(
    wanted: list[str], args: argparse.Namespace, version_dir: Path, running: contextlib.ExitStack
) -> list[Target]:
    """Every wanted system started at once (each stopped when `running` closes), as targets."""
    targets: list[Target] = []
    for variant in ("fp32", "int8"):
        name = f"ours_{variant}"
        if name not in wanted and f"{name}_http" not in wanted:
            continue
        server, port, metrics_port, http_port = start_ours([str(args.model_dir), "--variant", variant])
        running.callback(stop, server)
        targets += [Target(name, port, metrics_port), Target(f"{name}_http", http_port, metrics_port, True)]
    if "naive" in wanted:
        naive = python("bench.naive_server", "--model-version-dir", str(version_dir))
        process = subprocess.Popen(
            naive, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT
        )
        running.callback(stop, process)
        assert process.stdout is not None
        targets.append(Target("naive", int(EMPTY_READY.search(process.stdout.readline()).group(1))))  # type: ignore[union-attr]
    mlserver_python = None
    for name, batching in (("mlserver_batching", True), ("mlserver_no_batching", False)):
        if name not in wanted and f"{name}_http" not in wanted:
            continue
        mlserver_python = mlserver_python or peer.ensure_venv(args.cache_dir)
        folder = Path(running.enter_context(tempfile.TemporaryDirectory(prefix="mlserver-")))
        process, port = peer.start(mlserver_python, folder, version_dir, batching=batching)
        running.callback(peer.stop, process)
        http_port = json.loads((folder / "settings.json").read_text())["http_port"]
        targets += [Target(name, port), Target(f"{name}_http", http_port, None, True)]
    return targets


if __name__ == "__main__":
    main(sys.argv[1:])
