"""The default model beside the `large` one, so a user can choose with numbers: `python -m bench presets`.

Each version runs the graph `--variant auto` serves it as (its int8 graph when its build's int8 plan
held on the dev splits, else fp32), or each graph named by `--variants fp32,int8`, and is
measured four ways on the movie test snippets:

- ONNX Runtime alone, in-process, no RPC: one text per run on one thread (texts/s: what a text
  costs), and batches of 32 sorted by length, two runs side by side (texts/s: the model's ceiling);
- this server, its defaults: one caller, one text at a time (p50, p99), and 64 callers on 8
  connections (texts/s, p99).

Rounds alternate the two versions, which goes first changing each round; medians are kept. Figures go
to bench/presets.json and the "Presets" section of bench/RESULTS.md (bench/publish.py); the model card
quotes them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.run import ROOT, load, ort_alone, python, sentences_file, server_args, start, stop
from model_contract import versions as model_versions
from service.versions.store import ONNX_FILES, auto_variant

SCENARIOS = ("ort_batch1", "ort_sorted32", "server_1_caller", "server_64_callers")


def latest(model_dir: Path) -> Path:
    return model_dir / str(model_versions(model_dir)[-1])


def served(version_dir: Path) -> tuple[str, str]:
    """The graph --variant auto serves this version as on a CPU, and why."""
    config = json.loads((version_dir / "config.json").read_text())
    return auto_variant(version_dir, config, "cpu")


def measure(version_dir: Path, variant: str, texts: Path, duration: float) -> dict[str, dict[str, Any]]:
    graph = ONNX_FILES[variant]
    figures = {
        "ort_batch1": ort_alone(
            version_dir, texts, duration, "batch1", "--workers", "1", "--model-file", graph
        ),
        "ort_sorted32": ort_alone(version_dir, texts, duration, "sorted32", "--model-file", graph),
    }
    flags = ["--model-version", version_dir.name, "--variant", variant]
    server, port = start(python(*server_args(version_dir.parent, *flags)))
    try:
        figures["server_1_caller"] = load(port, texts, 1, 1, duration)
        figures["server_64_callers"] = load(port, texts, 64, 1, duration, channels=8)
    finally:
        stop(server)
    return figures


def ratios(large: dict[str, Any], default: dict[str, Any]) -> dict[str, float]:
    """`large`'s figures over the default's, on the same graph."""
    return {
        "ort_batch1_texts_per_s": large["ort_batch1"]["sentences_per_s"]
        / default["ort_batch1"]["sentences_per_s"],
        "ort_sorted32_texts_per_s": large["ort_sorted32"]["sentences_per_s"]
        / default["ort_sorted32"]["sentences_per_s"],
        "server_1_caller_p50": large["server_1_caller"]["p50_ms"] / default["server_1_caller"]["p50_ms"],
        "server_64_callers_texts_per_s": large["server_64_callers"]["sentences_per_s"]
        / default["server_64_callers"]["sentences_per_s"],
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "sentiment")
    parser.add_argument(
        "--large-dir",
        type=Path,
        required=True,
        help="versions of `python -m model_export build --preset large`",
    )
    parser.add_argument("--cache-dir", type=Path, default=ROOT / ".cache" / "data")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--variants",
        default="auto",
        help="graphs to measure, comma-separated: auto (what each is served as), fp32, int8",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    args = parser.parse_args(argv)
    versions = {"default": latest(args.model_dir), "large": latest(args.large_dir)}
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "rounds": args.rounds, "models": {}}
    runs: dict[str, tuple[Path, str]] = {}  # what is measured: a version on one graph
    for name, version_dir in versions.items():
        config = json.loads((version_dir / "config.json").read_text())
        auto, why = served(version_dir)
        for asked in args.variants.split(","):
            variant = auto if asked == "auto" else asked
            key = name if asked == "auto" else f"{name}, {variant}"
            runs[key] = (version_dir, variant)
            report["models"][key] = {
                "preset": config.get("preset", "?"),
                "variant": variant,
                "auto_serves": auto,
                "why": why,
                "graph_bytes": (version_dir / ONNX_FILES[variant]).stat().st_size,
                "int8_plan": (config.get("quantized") or {}).get("plan"),
            }
    results: dict[str, list[dict[str, dict[str, Any]]]] = {key: [] for key in runs}
    with tempfile.TemporaryDirectory(prefix="bench-presets-") as scratch:
        texts = sentences_file(Path(scratch), args.cache_dir, 1000)
        for round_ in range(args.rounds):
            order = list(runs) if round_ % 2 == 0 else list(reversed(runs))
            for key in order:
                results[key].append(measure(*runs[key], texts, args.duration))
                print(f"round {round_ + 1} {key}: {json.dumps(results[key][-1])}", flush=True)
    for key, measured in results.items():
        report["models"][key]["figures"] = {
            scenario: {
                figure: round(statistics.median(r[scenario][figure] for r in measured), 2)
                for figure in ("sentences_per_s", "p50_ms", "p99_ms", "p50_ms_per_run")
                if figure in measured[0][scenario]
            }
            for scenario in SCENARIOS
        }
    report["large_over_default"] = {
        key.removeprefix("large").lstrip(", ") or "auto": ratios(
            report["models"][key]["figures"],
            report["models"]["default" + key.removeprefix("large")]["figures"],
        )
        for key in runs
        if key.startswith("large")
    }
    (args.out / "presets.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["large_over_default"]))
    from bench.publish import rewrite_own_runs

    rewrite_own_runs(args.out)
