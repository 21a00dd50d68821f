"""Runs every scenario in one go on one machine and prints the figures side by side.

    python -m bench --model-dir models/sentiment [--duration 8]

Ceilings first (ONNX Runtime alone in-process; an empty grpc.aio server), then this server with
batching on and off, at 64 single-text callers, at 1 caller, and with 32 texts per request, and
with --workers 2 at 64 callers. The 64 callers share 8 connections.
Results also go to bench/results/<time>.json. Nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from model_contract import versions as model_versions

READY = re.compile(r"READY port=(\d+)")
ROOT = Path(__file__).resolve().parent.parent


def sentences_file(out: Path, cache_dir: Path, count: int) -> Path:
    """Test-split movie snippets, the same for every scenario."""
    from model_export.data import load_corpus, split

    examples, _ = load_corpus(cache_dir)
    texts = [e.text for e in split(examples, seed=13).test][:count]
    path = out / "sentences.json"
    path.write_text(json.dumps(texts))
    return path


def medians(
    runs: dict[str, dict[str, list[dict[str, Any]]]],
    keys: tuple[str, ...] = ("sentences_per_s", "p50_ms", "p99_ms"),
) -> dict[str, dict[str, dict[str, float]]]:
    """For runs by server and by load (each a list of load results, one per round), the median of
    each figure in `keys`."""
    return {
        name: {
            load: {key: statistics.median(r[key] for r in results) for key in keys}
            for load, results in by.items()
        }
        for name, by in runs.items()
    }


def python(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


def start(
    command: list[str], cwd: Path = ROOT, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], int]:
    """A server process (its code from `cwd`, in `env`) once it printed its READY line; (process, port)."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=cwd, env=env
    )
    assert process.stdout is not None
    match = READY.search(process.stdout.readline())
    if not match:
        process.kill()
        raise RuntimeError(f"{command} (in {cwd}) did not start")
    return process, int(match.group(1))


def stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


def measure(command: list[str]) -> dict[str, Any]:
    result = subprocess.run(command, capture_output=True, text=True, check=True, cwd=ROOT)
    parsed: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return parsed


def load(
    port: int, sentences: Path, concurrency: int, per_request: int, duration: float, channels: int = 1
) -> dict[str, Any]:
    return measure(
        python(
            "bench.loadgen",
            "--target",
            f"127.0.0.1:{port}",
            "--sentences",
            str(sentences),
            "--concurrency",
            str(concurrency),
            "--texts-per-request",
            str(per_request),
            "--duration",
            str(duration),
            "--channels",
            str(channels),
        )
    )


def ort_alone(version_dir: Path, texts: Path, duration: float, mode: str, *flags: str) -> dict[str, Any]:
    """ONNX Runtime in-process on `texts` (bench/ort_alone.py), no RPC."""
    return measure(
        python(
            "bench.ort_alone",
            "--model-version-dir",
            str(version_dir),
            "--sentences",
            str(texts),
            "--mode",
            mode,
            "--duration",
            str(duration),
            *flags,
        )
    )


def ort_latency(version_dir: Path, texts: Path, duration: float) -> dict[str, Any]:
    """ONNX Runtime's own batch-1 latency at its fastest: one caller, every core, spinning threads."""
    cores = str(len(os.sched_getaffinity(0)))
    return ort_alone(version_dir, texts, duration, "batch1", "--workers", "1", "--threads", cores, "--spin")


def server_args(model_dir: Path, *flags: str) -> list[str]:
    """`python -m service` arguments for a quiet server on a free loopback port, no metrics."""
    common = ["--host", "127.0.0.1", "--port", "0", "--metrics-port", "-1", "--log-level", "WARNING"]
    return ["service", "--model-dir", str(model_dir), *common, *flags]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=Path("models/sentiment"))
    parser.add_argument("--version", type=int, help="version directory to use; the highest by default")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per scenario")
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "sentiment-service")
    parser.add_argument("--server-flags", default="", help="extra flags for the batching-on server")
    args = parser.parse_args()
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    versions = model_versions(args.model_dir)
    version = args.version or versions[-1]
    version_dir = args.model_dir / str(version)
    texts = sentences_file(out, args.cache_dir, args.sentences)
    results: dict[str, Any] = {"model": str(version_dir), "duration_s": args.duration}

    def report(name: str, figures: dict[str, Any]) -> None:
        results[name] = figures
        shown = ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items())
        print(f"{name:<34} {shown}", flush=True)

    for mode in ("batch1", "sorted32", "unsorted32"):
        report(f"ort_alone_{mode}", ort_alone(version_dir, texts, args.duration, mode))
    report("ort_alone_batch1_every_core", ort_latency(version_dir, texts, args.duration))
    empty, port = start(python("bench.empty_server"))
    try:
        report("empty_grpc_server_64", load(port, texts, 64, 1, args.duration, channels=8))
    finally:
        stop(empty)
    base = server_args(args.model_dir, "--model-version", str(version))
    for label, flags in (
        ("batching_on", args.server_flags.split()),
        ("batching_off", ["--max-batch-size", "1"]),
        ("workers_2", ["--workers", "2", *args.server_flags.split()]),
    ):
        server, port = start(python(*base, *flags))
        try:
            # 8 connections, so that the kernel can spread them over the workers of --workers 2
            report(f"{label}_64_callers", load(port, texts, 64, 1, args.duration, channels=8))
            if label == "workers_2":
                continue
            report(f"{label}_1_caller", load(port, texts, 1, 1, args.duration))
            if label == "batching_on":
                report(f"{label}_32_texts_x4_callers", load(port, texts, 4, 32, args.duration))
        finally:
            stop(server)
    on64 = results["batching_on_64_callers"]["sentences_per_s"]
    ceiling = min(
        max(results[f"ort_alone_{m}"]["sentences_per_s"] for m in ("batch1", "sorted32")),
        results["empty_grpc_server_64"]["sentences_per_s"],
    )
    ratios = {
        "on_vs_off_64": on64 / results["batching_off_64_callers"]["sentences_per_s"],
        "workers_2_vs_1_64": results["workers_2_64_callers"]["sentences_per_s"] / on64,
        "workers_2_64_vs_lower_ceiling": results["workers_2_64_callers"]["sentences_per_s"] / ceiling,
        "on_64_vs_lower_ceiling": on64 / ceiling,
        "on_1_caller_p50_over_ort_batch1_ms": results["batching_on_1_caller"]["p50_ms"]
        - results["ort_alone_batch1_every_core"]["p50_ms_per_run"],
        "on_vs_off_1_caller_p50": results["batching_on_1_caller"]["p50_ms"]
        / results["batching_off_1_caller"]["p50_ms"],
        "on_32_texts_vs_ort_sorted32": results["batching_on_32_texts_x4_callers"]["sentences_per_s"]
        / results["ort_alone_sorted32"]["sentences_per_s"],
        "on_64_vs_best_ort": on64
        / max(results[f"ort_alone_{m}"]["sentences_per_s"] for m in ("batch1", "sorted32", "unsorted32")),
    }
    report("ratios", ratios)
    path = out / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
