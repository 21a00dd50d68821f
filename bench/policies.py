"""The batching policy against the other ways a user can set the server up, at the same loads.

    python -m bench.policies --model-dir models/sentiment [--duration 8] [--rates 60,100,140,180]

Starts this server once per configuration, all at once (fp32 unless --variant says otherwise):
- the defaults (docs/batching.md: rounds from the fair queue, two narrow batches side by side under
  load, a lone round on every core once the server is quiet);
- never wide: one thread per batch, always (--lone-batch-threads 1);
- one round at a time (--max-concurrent-batches 1): every core for each round once quiet, else one;
- batching off (--max-batch-size 1): each text its own batch, two side by side.
Then each load point runs against every configuration in turn, the order rotated (bench.report's
Rotation): closed loop at 1 and 64 callers, and open loop (Poisson) at the same offered rates for
all. Writes bench/policies.json and prints a table. Asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Any

from bench.report import Rotation, Target, run_point, start_ours
from bench.run import ROOT, sentences_file, stop

CONFIGURATIONS = {
    "defaults": [],
    "never wide": ["--lone-batch-threads", "1"],
    "one round at a time": ["--max-concurrent-batches", "1"],
    "batching off": ["--max-batch-size", "1"],
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=Path("models/sentiment"))
    parser.add_argument("--variant", default="fp32")
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--rates", default="60,100,140,180", help="open-loop requests/s")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "sentiment-service")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "policies.json")
    args = parser.parse_args()
    results_dir = ROOT / "bench" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    files = {"short": sentences_file(results_dir, args.cache_dir, 1000)}
    figures: dict[str, Any] = {name: {"closed": {}, "open": {}} for name in CONFIGURATIONS}
    with contextlib.ExitStack() as running:
        targets = []
        for name, flags in CONFIGURATIONS.items():
            server, port, metrics_port, _ = start_ours(
                [str(args.model_dir), "--variant", args.variant, *flags]
            )
            running.callback(stop, server)
            targets.append(Target(name, port, metrics_port))
        turns = Rotation(targets)
        for callers in (1, 64):
            knobs = {"processes": 2, "channels": 4} if callers > 1 else {}
            for target in turns.next():
                figures[target.name]["closed"][callers] = run_point(
                    target, files, args.duration, f"{callers} callers", concurrency=callers, **knobs
                )
        for rate in (float(r) for r in args.rates.split(",")):
            for target in turns.next():
                figures[target.name]["open"][rate] = run_point(
                    target, files, args.duration, f"open {rate:.0f}/s", rate=rate, processes=2, channels=4
                )
    result = {
        "model": str(args.model_dir),
        "variant": args.variant,
        "duration_s": args.duration,
        "figures": figures,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    rates = list(next(iter(figures.values()))["open"])
    print(
        "| configuration | 1 caller p50 ms | 64 callers /s | 64 callers p99 ms | "
        + " | ".join(f"p99 ms at {rate:.0f}/s" for rate in rates)
        + " |"
    )
    for name, by in figures.items():
        cells = [
            f"{by['closed'][1]['p50_ms']:.1f}",
            f"{by['closed'][64]['sentences_per_s']:.0f}",
            f"{by['closed'][64]['p99_ms']:.0f}",
            *(f"{by['open'][rate]['p99_ms']:.0f}" for rate in rates),
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
