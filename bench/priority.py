"""Interactive callers beside a bulk flood: `python -m bench priority`.

One server (the default model, its defaults). Its capacity is measured first (closed loop, requests
of 8 texts). Then an interactive probe, one text per request at a steady Poisson rate, runs

- alone;
- beside a flood of requests of 8 texts at twice the capacity (open loop: what the server cannot
  take it refuses, RESOURCE_EXHAUSTED, and the flood does not slow down), the probe at priority HIGH
  and the flood at LOW;
- beside the same flood with no priorities (both NORMAL): what the priorities buy.

Each run is repeated (--rounds) and the median of each figure kept. The probe's latency counts from
each call's planned arrival. Figures go to bench/priority.json and the "Priorities" section of
bench/RESULTS.md (bench/publish.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.report import start_ours
from bench.run import ROOT, python, sentences_file, stop
from model_contract import versions as model_versions

FLOOD_TEXTS = 8  # per flood request: a bulk job's batch


def waits(metrics_port: int) -> dict[str, float]:
    """Texts counted in the queue-wait histogram and their seconds, by priority."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    figures: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "sentiment_queue_wait_seconds":
            for sample in family.samples:
                if sample.name.endswith(("_sum", "_count")):
                    figures[f"{sample.labels['priority']}{sample.name[len(family.name) :]}"] = sample.value
    return figures


def loadgen(port: int, sentences: Path, duration: float, priority: str, **knobs: Any) -> list[str]:
    command = python(
        "bench.loadgen", "--target", f"127.0.0.1:{port}", "--sentences", str(sentences),
        "--duration", str(duration), "--priority", priority,
    )  # fmt: skip
    for key, value in knobs.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    return command


def result(process: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = process.communicate()
    if process.returncode:
        raise RuntimeError(f"the load generator failed ({process.returncode})")
    parsed: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return parsed


def run(command: list[str]) -> dict[str, Any]:
    return result(subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT))


def probe_beside_flood(
    port: int, sentences: Path, probe: list[str], flood_rate: float, duration: float, flood_priority: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The probe, started once the flood has filled the queue, and the flood, which outlasts it."""
    flood = subprocess.Popen(
        loadgen(
            port, sentences, duration + 8, flood_priority, rate=flood_rate, texts_per_request=FLOOD_TEXTS,
            processes=1, channels=4,
        ),
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    time.sleep(4.0)  # the flood's processes start, connect and fill the queue
    measured = run(probe)
    return measured, result(flood)


def summary(probe: dict[str, Any], flood: dict[str, Any] | None = None) -> dict[str, Any]:
    figures = {
        "probe_p50_ms": probe["p50_ms"],
        "probe_p99_ms": probe["p99_ms"],
        "probe_requests": probe["requests"],
        "probe_errors": sum(probe["errors"].values()),
    }
    if flood is not None:
        figures["flood_served_texts_per_s"] = flood["sentences_per_s"]
        figures["flood_offered_texts_per_s"] = flood["offered_per_s"]
        figures["flood_refused"] = flood["errors"].get("RESOURCE_EXHAUSTED", 0)
    return figures


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "sentiment")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / ".cache" / "data")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of probe per run")
    parser.add_argument("--probe-rate", type=float, default=8.0, help="interactive requests per second")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    args = parser.parse_args(argv)
    version_dir = args.model_dir / str(model_versions(args.model_dir)[-1])
    report: dict[str, Any] = {
        "model": json.loads((version_dir / "config.json").read_text()).get("preset", "?"),
        "date": time.strftime("%Y-%m-%d"),
        "probe_rate_per_s": args.probe_rate,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "flood_texts_per_request": FLOOD_TEXTS,
    }
    with tempfile.TemporaryDirectory(prefix="bench-priority-") as scratch:
        sentences = sentences_file(Path(scratch), args.cache_dir, 2000)
        server, port, metrics_port, _ = start_ours([str(args.model_dir), "--metrics-host", "127.0.0.1"])
        try:
            capacity = run(
                loadgen(port, sentences, 10, "low", concurrency=32, texts_per_request=FLOOD_TEXTS, channels=4)
            )["sentences_per_s"]
            report["capacity_texts_per_s"] = round(capacity, 1)
            flood_rate = 2 * capacity / FLOOD_TEXTS
            print(f"capacity {capacity:.0f} texts/s; flood {flood_rate:.1f} requests/s", flush=True)
            runs: dict[str, list[dict[str, Any]]] = {
                "alone": [],
                "with_priorities": [],
                "without_priorities": [],
            }
            queue_waits: list[dict[str, float]] = []
            for round_ in range(args.rounds):
                probe_high = loadgen(port, sentences, args.duration, "high", rate=args.probe_rate)
                probe_normal = loadgen(port, sentences, args.duration, "normal", rate=args.probe_rate)
                time.sleep(6.0)  # the kept slot of the last run lapses: "alone" starts from a quiet server
                runs["alone"].append(summary(run(probe_normal)))
                before = waits(metrics_port)
                runs["with_priorities"].append(
                    summary(
                        *probe_beside_flood(port, sentences, probe_high, flood_rate, args.duration, "low")
                    )
                )
                queue_waits.append({k: v - before.get(k, 0.0) for k, v in waits(metrics_port).items()})
                runs["without_priorities"].append(
                    summary(
                        *probe_beside_flood(
                            port, sentences, probe_normal, flood_rate, args.duration, "normal"
                        )
                    )
                )
                print(f"round {round_ + 1}: " + json.dumps({k: v[-1] for k, v in runs.items()}), flush=True)
        finally:
            stop(server)
    for name, results in runs.items():
        report[name] = {key: round(statistics.median(r[key] for r in results), 2) for key in results[0]}
    alone = report["alone"]["probe_p99_ms"]
    report["p99_with_priorities_over_alone"] = round(report["with_priorities"]["probe_p99_ms"] / alone, 2)
    report["p99_without_priorities_over_alone"] = round(
        report["without_priorities"]["probe_p99_ms"] / alone, 2
    )
    report["runs"] = runs
    report["queue_waits_with_priorities"] = queue_waits
    path = args.out / "priority.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(
        json.dumps(
            {k: v for k, v in report.items() if k not in ("runs", "queue_waits_with_priorities")}, indent=1
        )
    )
    from bench.publish import rewrite_own_runs

    rewrite_own_runs(args.out)
    print(f"wrote {path} and its section of {args.out / 'RESULTS.md'}")
