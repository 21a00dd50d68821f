"""This tree against another commit, one server each, at 1 and 64 callers (and, with --rates, Poisson
arrivals at those rates), in one run: does a change cost speed?

    python -m bench.ab --base REV --model-dir models/sentiment [--duration 8] [--rounds 5] [--rates 100,140]

The other commit's server runs from a git worktree, over the same model directory. Both servers run
for the whole bench and the load goes to each in turn, round after round, each round starting with
the other server, so that the machine's drift falls on both alike. Each figure is the median over
the rounds; the ratios are of medians from this one run. Writes bench/ab.json (or --out) and prints
a table. Nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.report import load
from bench.run import ROOT, medians, sentences_file, stop
from bench.tracing import CALLERS, start, summary, worktree


def loads(rates: str) -> dict[str, dict[str, Any]]:
    """The load points by label: closed loop at each of CALLERS, then open loop at each rate."""
    points: dict[str, dict[str, Any]] = {
        str(c): {"concurrency": c, "processes": 2 if c > 1 else 1, "channels": 4 if c > 1 else 1}
        for c in CALLERS
    }
    for rate in filter(None, rates.split(",")):
        points[f"{float(rate):.0f}/s"] = {"rate": float(rate), "processes": 2, "channels": 4}
    return points


def table(figures: dict[str, Any]) -> str:
    """Medians per server and load, and this tree's ratio to the base."""
    names = figures["servers"]
    rows = ["| server | load | sentences/s | p50 ms | p99 ms |", "|---|---|---|---|---|"]
    points = list(figures["median"][names[0]])
    for callers in points:
        for name in names:
            m = figures["median"][name][callers]
            rows.append(
                f"| {name} | {callers} | {m['sentences_per_s']:.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} |"
            )
    this, base = names
    for callers in points:
        a, b = figures["median"][this][callers], figures["median"][base][callers]
        ratio = {key: a[key] / b[key] for key in ("sentences_per_s", "p50_ms", "p99_ms")}
        rows.append(
            f"\n{callers}, this tree / base: throughput {ratio['sentences_per_s']:.3f}, "
            f"p50 {ratio['p50_ms']:.3f}, p99 {ratio['p99_ms']:.3f}"
        )
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", required=True, help="the commit to compare with")
    parser.add_argument("--model-dir", type=Path, default=Path("models/sentiment"))
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rates", default="", help="open-loop requests/s to add, comma-separated")
    parser.add_argument("--sentences", type=int, default=1000)
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "sentiment-service")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "ab.json")
    args = parser.parse_args()
    model_dir = args.model_dir.resolve()
    results = args.out.parent / "results"
    results.mkdir(parents=True, exist_ok=True)
    texts = sentences_file(results, args.cache_dir, args.sentences)
    with tempfile.TemporaryDirectory() as scratch:
        base = worktree(args.base, Path(scratch))
        names = ["this tree", f"base ({args.base})"]
        servers = {}
        try:
            servers = {name: start(model_dir, {}, cwd) for name, cwd in zip(names, (ROOT, base), strict=True)}
            points = loads(args.rates)
            runs: dict[str, dict[str, list[dict[str, Any]]]] = {n: {p: [] for p in points} for n in names}
            for round_ in range(args.rounds):
                order = names[round_ % 2 :] + names[: round_ % 2]  # each round starts with the other
                for label, knobs in points.items():
                    for name in order:
                        result = load(servers[name][1], texts, args.duration, **knobs)
                        runs[name][label].append(result)
                        print(f"round {round_ + 1}, {label}, {name}: {summary(result)}", flush=True)
        finally:
            for process, _ in servers.values():
                stop(process)
            subprocess.run(["git", "worktree", "remove", "--force", str(base)], cwd=ROOT, check=False)
    figures = {
        "servers": names,
        "model_dir": str(args.model_dir),
        "duration_s": args.duration,
        "rounds": args.rounds,
        "errors": sum(sum(r["errors"].values()) for by in runs.values() for res in by.values() for r in res),
        "median": medians(runs),
        "runs": runs,
    }
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    print(table(figures))


if __name__ == "__main__":
    main()
