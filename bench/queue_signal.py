"""Which signal says "add a replica" before callers feel it: this server under rising Poisson load,
with its mean queue wait (what the Kubernetes autoscaler reads, deploy/k8s/hpa.yaml), its queue
depth and its CPU use beside the callers' p99, at each offered load.

    python -m bench.queue_signal --model-dir models/sentiment [--duration 10]

Capacity is measured first (64 closed-loop callers); then open loop at shares of it. The SLO is
p99 within 500 ms (the SentimentHighLatencyP99 alert's limit). Writes bench/queue_signal.json and
bench/figures/queue_signal.png; prints one line per load.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.report import load, scrape, start_ours
from bench.run import ROOT, sentences_file, stop

SLO_P99_MS = 500.0
SHARES = (0.2, 0.4, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1)
QUEUE_WAIT = ("sentiment_queue_wait_seconds",)


class DepthWatcher(threading.Thread):
    """Reads sentiment_queue_depth every 0.2 s while a load runs: its mean and its peak."""

    def __init__(self, metrics_port: int) -> None:
        super().__init__(daemon=True)
        self.url = f"http://127.0.0.1:{metrics_port}/metrics"
        self.values: list[float] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            with urllib.request.urlopen(self.url, timeout=10) as response:
                for line in response.read().decode().splitlines():
                    if line.startswith("sentiment_queue_depth "):
                        self.values.append(float(line.split()[1]))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def plot(points: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    offered = [p["offered_per_s"] for p in points]
    figure, axis = plt.subplots(figsize=(7, 4.5))
    axis.plot(offered, [p["p99_ms"] for p in points], marker="o", label="callers' p99, ms")
    axis.plot(
        offered, [1000 * p["queue_wait_mean_s"] for p in points], marker="s", label="mean queue wait, ms"
    )
    axis.axhline(SLO_P99_MS, color="grey", linestyle="--", label=f"SLO: p99 {SLO_P99_MS:.0f} ms")
    axis.set_yscale("log")
    axis.set_xlabel("offered sentences / s (Poisson)")
    axis.set_ylabel("ms")
    right = axis.twinx()
    right.plot(offered, [100 * p["cpu_share"] for p in points], color="tab:red", alpha=0.5, label="CPU, %")
    right.set_ylabel("server CPU, % of its cores")
    right.set_ylim(0, 110)
    lines = axis.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    axis.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="upper left")
    axis.set_title("What rises with load before p99 breaks the SLO")
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=Path("models/sentiment"))
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "sentiment-service")
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    args = parser.parse_args()
    results = args.out / "results"
    results.mkdir(parents=True, exist_ok=True)
    texts = sentences_file(results, args.cache_dir, args.sentences)
    server, port, metrics_port, _ = start_ours([str(args.model_dir)])
    cores = len(os.sched_getaffinity(0))
    points = []
    try:
        capacity = load(port, texts, args.duration, concurrency=64, processes=2, channels=4)[
            "sentences_per_s"
        ]
        print(f"capacity {capacity:.0f} sentences/s", flush=True)
        for share in SHARES:
            before, cpu_before, started = (
                scrape(metrics_port, QUEUE_WAIT),
                cpu_seconds(server.pid),
                time.monotonic(),
            )
            watcher = DepthWatcher(metrics_port)
            watcher.start()
            result = load(
                port, texts, args.duration, rate=round(capacity * share, 1), processes=2, channels=4
            )
            watcher.done.set()
            watcher.join()
            after, cpu_after, elapsed = (
                scrape(metrics_port, QUEUE_WAIT),
                cpu_seconds(server.pid),
                time.monotonic() - started,
            )
            waited = (
                after["sentiment_queue_wait_seconds_count"] - before["sentiment_queue_wait_seconds_count"]
            )
            point = {
                "share": share,
                "offered_per_s": result["offered_per_s"],
                "served_per_s": result["sentences_per_s"],
                "p50_ms": result["p50_ms"],
                "p99_ms": result["p99_ms"],
                "errors": result["errors"],
                "queue_wait_mean_s": (
                    after["sentiment_queue_wait_seconds_sum"] - before["sentiment_queue_wait_seconds_sum"]
                )
                / max(waited, 1),
                "queue_depth_mean": sum(watcher.values) / max(len(watcher.values), 1),
                "queue_depth_max": max(watcher.values, default=0.0),
                "cpu_share": (cpu_after - cpu_before) / elapsed / cores,
            }
            points.append(point)
            print(json.dumps(point), flush=True)
    finally:
        stop(server)
    within = [p for p in points if p["p99_ms"] is not None and p["p99_ms"] <= SLO_P99_MS and not p["errors"]]
    beyond = [p for p in points if p not in within]
    report = {
        "model_dir": str(args.model_dir),
        "duration_s": args.duration,
        "cores": cores,
        "capacity_per_s": capacity,
        "slo_p99_ms": SLO_P99_MS,
        "points": points,
        # the highest load still within the SLO, and the lowest beyond it: the signal's value between
        # them is where p99 leaves the SLO
        "last_within": within[-1] if within else None,
        "first_beyond": min(beyond, key=lambda p: p["offered_per_s"]) if beyond else None,
    }
    (args.out / "queue_signal.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "figures").mkdir(exist_ok=True)
    plot(points, args.out / "figures" / "queue_signal.png")
    print(f"wrote {args.out / 'queue_signal.json'} and {args.out / 'figures' / 'queue_signal.png'}")


if __name__ == "__main__":
    main()
