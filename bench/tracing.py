"""What tracing costs: this server with tracing off, on and sampled at 10%, and on for every call,
at 1 and 64 callers, in one run.

    python -m bench.tracing --model-dir models/sentiment [--duration 8] [--rounds 3] [--base REV]

Spans go over OTLP/gRPC to a receiver in this process (bench/otlp_receiver.py), as they would to a
collector; it shares the machine's cores with the servers and the load, which counts against
tracing. With --base REV the server at another commit (a git worktree: one from before tracing
existed) runs too, so that "off" is measured against no tracing code at all.

Every server runs for the whole bench and the load goes to each in turn, round after round, each
round starting with the next server: the machine's drift falls on all of them alike. Each figure is
the median over the rounds; the costs are ratios of medians from this one run. Writes
bench/tracing.json and bench/TRACING.md. Nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.otlp_receiver import OtlpReceiver
from bench.report import load
from bench.run import ROOT, medians, python, sentences_file, server_args, stop
from bench.run import start as start_server

CALLERS = (1, 64)


def start(model_dir: Path, env: dict[str, str], cwd: Path) -> tuple[subprocess.Popen[str], int]:
    """A server with the OTEL_* variables `env` adds, its code from `cwd`; (process, gRPC port)."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    return start_server(python(*server_args(model_dir, "--http-port", "-1")), cwd, {**clean, **env})


def worktree(rev: str, into: Path) -> Path:
    path = into / "base"
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(path), rev], cwd=ROOT, check=True, capture_output=True
    )
    return path


def summary(result: dict[str, Any]) -> str:
    return (
        f"{result['sentences_per_s']:.0f}/s, p50 {result['p50_ms']:.1f} ms, "
        f"p99 {result['p99_ms']:.1f} ms, errors {result['errors']}"
    )


def table(figures: dict[str, Any]) -> str:
    rows = [
        "| server | callers | sentences/s | its rounds, lowest to highest | p50 ms | p99 ms "
        "| throughput vs off |",
        "|---|---|---|---|---|---|---|",
    ]
    for callers in CALLERS:
        off = figures["median"]["off"][str(callers)]["sentences_per_s"]
        for name in figures["configurations"]:
            point = figures["median"][name][str(callers)]
            rounds = [r["sentences_per_s"] for r in figures["runs"][name][str(callers)]]
            ratio = point["sentences_per_s"] / off
            rows.append(
                f"| {name} | {callers} | {point['sentences_per_s']:.0f} | {min(rounds):.0f} to "
                f"{max(rounds):.0f} | {point['p50_ms']:.1f} | {point['p99_ms']:.1f} | {ratio:.3f} |"
            )
    return "\n".join(rows)


def page(figures: dict[str, Any]) -> str:
    return (
        "# What tracing costs\n\n"
        f"`python -m bench.tracing`: each figure the median of {figures['rounds']} rounds of "
        f"{figures['duration_s']:g} s, the servers measured in turn within each round, each round starting "
        "with the next server; spans exported over OTLP/gRPC to a receiver on the same machine "
        f"({figures['spans_received']} spans received). Raw figures: bench/tracing.json.\n\n"
        f"{table(figures)}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=Path("models/sentiment"))
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--base", help="a commit to measure too, e.g. one from before tracing")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "sentiment-service")
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    args = parser.parse_args()
    model_dir = args.model_dir.resolve()
    (args.out / "results").mkdir(parents=True, exist_ok=True)
    texts = sentences_file(args.out / "results", args.cache_dir, args.sentences)
    with tempfile.TemporaryDirectory() as scratch, OtlpReceiver() as receiver:
        exporting = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}
        configurations: dict[str, tuple[dict[str, str], Path]] = {
            "off": ({}, ROOT),
            "on, 10% sampled": (
                {
                    **exporting,
                    "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                    "OTEL_TRACES_SAMPLER_ARG": "0.1",
                },
                ROOT,
            ),
            "on, every call": (exporting, ROOT),
        }
        base = None
        if args.base:
            base = worktree(args.base, Path(scratch))
            configurations = {f"no tracing code ({args.base})": ({}, base), **configurations}
        servers = {name: start(model_dir, env, cwd) for name, (env, cwd) in configurations.items()}
        runs: dict[str, dict[str, list[dict[str, Any]]]] = {
            name: {str(c): [] for c in CALLERS} for name in configurations
        }
        try:
            for round_ in range(args.rounds):
                names = list(servers)
                shift = round_ % len(names)  # each round starts with the next server: no order favours one
                for callers in CALLERS:
                    for name in names[shift:] + names[:shift]:
                        port = servers[name][1]
                        knobs = {
                            "concurrency": callers,
                            "processes": 2 if callers > 1 else 1,
                            "channels": 4 if callers > 1 else 1,
                        }
                        result = load(port, texts, args.duration, **knobs)
                        runs[name][str(callers)].append(result)
                        print(f"round {round_ + 1}, {callers} callers, {name}: {summary(result)}", flush=True)
        finally:
            for process, _ in servers.values():
                stop(process)
            if base is not None:
                subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False)
        spans = len(receiver.spans())
    median = medians(runs)
    figures = {
        "configurations": list(configurations),
        "duration_s": args.duration,
        "rounds": args.rounds,
        "spans_received": spans,
        "errors": sum(sum(r["errors"].values()) for by in runs.values() for res in by.values() for r in res),
        "median": median,
        "runs": runs,
    }
    (args.out / "tracing.json").write_text(json.dumps(figures, indent=2) + "\n")
    text = page(figures)
    (args.out / "TRACING.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
