"""Explanations: what one costs, and what a flood of them costs everyone else: `python -m bench explain`.

One server (the default model, its defaults: the graph --variant auto serves).

- Latency: texts of 30 words (movie snippets of 28 to 32 words as written, else two joined), one
  caller, one after another, the server otherwise idle: each text answered plain, explained with
  sampled Shapley values (the default explanation) and by occlusion. p50, p90 and the worst.
- Fairness: an interactive probe (one short text per request, Poisson, --probe-rate) alone, then
  beside a flood of explanation requests (closed loop, --flood-callers callers each asking for the
  Shapley explanation of a snippet at a time, so the queue always holds explanation work), then
  beside a flood of plain requests of the same work (as many snippets per request as a snippet has
  words). An explanation is queued as the work it is: it should cost the probe what the plain flood
  does, no more.

Each part is repeated (--rounds) and medians kept. Figures go to bench/explain.json and the
"Explanations" section of bench/RESULTS.md (bench/publish.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from bench.priority import loadgen, result, run, summary
from bench.report import start_ours
from bench.run import ROOT, sentences_file, stop
from model_contract import versions as model_versions
from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from sentiment_client.pb.sentiment.v1 import sentiment_pb2_grpc as pb_grpc

WORDS = 30
MODES = {
    "plain": pb.EXPLAIN_MODE_NONE,
    "shapley": pb.EXPLAIN_MODE_SHAPLEY,
    "occlusion": pb.EXPLAIN_MODE_OCCLUSION,
}


def thirty_words(texts: list[str], count: int) -> list[str]:
    """Texts of about WORDS words as written: those of 28 to 32, then pairs joined to reach it."""
    picked = [t for t in texts if abs(len(t.split()) - WORDS) <= 2][:count]
    pool = iter(texts)
    while len(picked) < count:
        joined = next(pool)
        while len(joined.split()) < WORDS - 2:
            joined = f"{joined} {next(pool)}"
        picked.append(" ".join(joined.split()[: WORDS + 2]))
    return picked


def percentiles(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "p50_ms": round(1000 * statistics.median(ordered), 1),
        "p90_ms": round(1000 * ordered[int(0.9 * (len(ordered) - 1))], 1),
        "max_ms": round(1000 * ordered[-1], 1),
    }


def latencies(port: int, texts: list[str]) -> dict[str, Any]:
    """Each text alone, plain and explained both ways, one call at a time."""
    figures: dict[str, Any] = {}
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.SentimentServiceStub(channel)
        for name, mode in MODES.items():
            stub.Predict(pb.PredictRequest(texts=texts[:2], explain=mode))  # warm
            seconds, words, passes = [], [], []
            for text in texts:
                started = time.perf_counter()
                answer = stub.Predict(pb.PredictRequest(texts=[text], explain=mode))
                seconds.append(time.perf_counter() - started)
                why = answer.predictions[0].explanation
                words.append(len(why.words))
                passes.append(why.passes)
            figures[name] = percentiles(seconds) | (
                {
                    "words_mean": round(statistics.mean(words), 1),
                    "passes_mean": round(statistics.mean(passes), 1),
                }
                if name != "plain"
                else {}
            )
    return figures


def same_work(port: int, texts: list[str]) -> int:
    """Texts per plain request that make the work of explaining one text: the mean words of `texts`
    as the server counts them (an explanation reads 2n variants of half the text on average)."""
    counts = []
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.SentimentServiceStub(channel)
        for begin in range(0, len(texts), 10):  # within the words a request may have explained
            request = pb.PredictRequest(texts=texts[begin : begin + 10], explain=pb.EXPLAIN_MODE_OCCLUSION)
            counts += [len(p.explanation.words) for p in stub.Predict(request).predictions]
    return max(1, round(statistics.mean(counts)))


def beside_flood(
    port: int, sentences: Path, probe: list[str], args: argparse.Namespace, knobs: dict[str, Any]
) -> dict[str, Any]:
    """The probe beside a closed-loop flood of --flood-callers, each request shaped by `knobs`."""
    flood = subprocess.Popen(
        loadgen(
            port, sentences, args.duration + 6, "normal", concurrency=args.flood_callers, channels=2, **knobs
        ),
        stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    time.sleep(3.0)  # the flood connects and fills the queue
    measured = summary(run(probe))
    flooded = result(flood)
    measured["flood_requests_per_s"] = round(
        flooded["sentences_per_s"] / knobs.get("texts_per_request", 1), 1
    )
    return measured


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "sentiment")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / ".cache" / "data")
    parser.add_argument("--texts", type=int, default=40, help="texts of 30 words timed, per round")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of probe per fairness run")
    parser.add_argument("--probe-rate", type=float, default=8.0, help="interactive requests per second")
    parser.add_argument("--flood-callers", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--variant", default="auto", help="the server's --variant (auto: what it serves this version as)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    args = parser.parse_args(argv)
    version_dir = args.model_dir / str(model_versions(args.model_dir)[-1])
    config = json.loads((version_dir / "config.json").read_text())
    report: dict[str, Any] = {
        "model": config.get("preset", "?"),
        "date": time.strftime("%Y-%m-%d"),
        "rounds": args.rounds,
        "probe_rate_per_s": args.probe_rate,
        "flood_callers": args.flood_callers,
        "duration_s": args.duration,
        "variant": args.variant,
    }
    with tempfile.TemporaryDirectory(prefix="bench-explain-") as scratch:
        sentences = sentences_file(Path(scratch), args.cache_dir, 2000)
        texts = thirty_words(json.loads(sentences.read_text()), args.texts)
        server, port, metrics_port, _ = start_ours(
            [str(args.model_dir), "--metrics-host", "127.0.0.1", "--variant", args.variant]
        )
        try:
            equal = same_work(port, json.loads(sentences.read_text())[:200])
            report["plain_flood_texts_per_request"] = equal
            timed: list[dict[str, Any]] = []
            runs: dict[str, list[dict[str, Any]]] = {"alone": [], "explanations": [], "plain": []}
            for round_ in range(args.rounds):
                timed.append(latencies(port, texts))
                probe = loadgen(port, sentences, args.duration, "normal", rate=args.probe_rate)
                time.sleep(2.0)
                runs["alone"].append(summary(run(probe)))
                for name, knobs in (
                    ("explanations", {"explain": "shapley"}),
                    ("plain", {"texts_per_request": equal}),
                ):
                    runs[name].append(beside_flood(port, sentences, probe, args, knobs))
                print(
                    f"round {round_ + 1}: "
                    + json.dumps({"timed": timed[-1]} | {k: v[-1] for k, v in runs.items()}),
                    flush=True,
                )
        finally:
            stop(server)
    report["latency"] = {
        name: {key: round(statistics.median(r[name][key] for r in timed), 1) for key in timed[0][name]}
        for name in MODES
    }
    for name, results in runs.items():
        report[f"probe_{name}"] = {k: round(statistics.median(r[k] for r in results), 2) for k in results[0]}
    alone = report["probe_alone"]["probe_p99_ms"]
    report["probe_p99_over_alone"] = {
        name: round(report[f"probe_{name}"]["probe_p99_ms"] / alone, 2) for name in ("explanations", "plain")
    }
    report["runs"] = {"latency": timed} | runs
    path = args.out / "explain.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}, indent=1))
    from bench.publish import rewrite_own_runs

    rewrite_own_runs(args.out)
    print(f"wrote {path} and its section of {args.out / 'RESULTS.md'}")
