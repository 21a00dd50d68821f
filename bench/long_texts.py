"""Long texts cut or read whole: `python -m bench.long_texts`.

Accuracy on the texts of each test split (movie snippets, tweets, patients' drug reviews) that are
longer than the window the model reads, cut (the first tokens read, as the server does by default)
against read whole in overlapping windows (the server's own code: Preprocessor.windows and
core/windows.combine, --long-texts windows). No test split holds a text over the model's 256 tokens
(the patient reviews' longest is 212), so the comparison is also made with narrower windows (128, 64
and 32 tokens): the same question, how much of what a cut loses the windows recover, on text people
wrote. The model was trained on whole texts, so a narrow window is a harder setting for both ways
alike. Figures go to bench/long_texts.json and its section of bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.run import ROOT
from model_contract import versions as model_versions
from service.core.fair_queue import ItemResult
from service.core.postprocess import make_run_fn
from service.core.preprocess import Encoded, Preprocessor
from service.core.results import AttentionMode
from service.core.runtime import OnnxModel
from service.core.windows import combine

BATCH = 32


def splits(version_dir: Path, cache_dir: Path) -> dict[str, list[Any]]:
    from model_export.data import load_corpus, patient_splits, split, tweet_splits

    config = json.loads((version_dir / "config.json").read_text())
    seed = config.get("training", {}).get("config", {}).get("seed", 13)
    movies, _ = load_corpus(cache_dir)
    return {
        "movie snippets": list(split(movies, seed=seed).test),
        "tweets": list(tweet_splits(cache_dir, seed)[0].test),
        "patients' drug reviews": list(patient_splits(cache_dir, seed)[0].test),
    }


def rows(model: OnnxModel, sequences: list[Encoded]) -> list[Any]:
    """Each sequence's row, run in batches of BATCH, padded within each."""
    run = make_run_fn(model)
    out: list[Any] = []
    for start in range(0, len(sequences), BATCH):
        batch = sequences[start : start + BATCH]
        width = max(len(s.ids) for s in batch)
        ids = np.zeros((len(batch), width), np.int64)
        mask = np.zeros((len(batch), width), np.int64)
        for row, sequence in enumerate(batch):
            ids[row, : len(sequence.ids)] = sequence.ids
            mask[row, : len(sequence.ids)] = 1
        out += run(ids, mask, [AttentionMode.NONE] * len(batch), False)
    return out


def compare(model: OnnxModel, tokenizer: Path, window: int, examples: list[Any]) -> dict[str, Any]:
    """Accuracy cut and whole on the examples longer than `window` tokens."""
    reader = Preprocessor(tokenizer, window, max_texts=1_000_000, max_chars=1_000_000)
    encoded = reader.tokenize([e.text for e in examples])
    long = [i for i, each in enumerate(encoded) if each.truncated]
    if not long:
        return {"texts": 0}
    labels = [examples[i].label for i in long]
    cut = [int(row.probabilities.argmax()) for row in rows(model, [encoded[i] for i in long])]
    windows = [reader.windows(examples[i].text) for i in long]
    parts = rows(model, [part for each in windows for part in each.parts])
    whole, at = [], 0
    for each in windows:
        served = [ItemResult(row, 0.0, 0.0, 1, 0) for row in parts[at : at + len(each.parts)]]
        whole.append(int(combine(served, each).value.probabilities.argmax()))
        at += len(each.parts)
    return {
        "texts": len(long),
        "windows_mean": round(sum(len(each.parts) for each in windows) / len(long), 2),
        "cut": round(float(np.mean([p == y for p, y in zip(cut, labels, strict=True)])), 4),
        "whole": round(float(np.mean([p == y for p, y in zip(whole, labels, strict=True)])), 4),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "sentiment")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / ".cache" / "data")
    parser.add_argument(
        "--windows", default="0,128,64,32", help="window widths in tokens; 0: the model's own"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    args = parser.parse_args(argv)
    version_dir = args.model_dir / str(model_versions(args.model_dir)[-1])
    config = json.loads((version_dir / "config.json").read_text())
    model = OnnxModel(version_dir / "model.onnx", "cpu", intra_op_threads=2)
    tokenizer = version_dir / "tokenizer.json"
    widths = [int(w) or int(config["max_length"]) for w in args.windows.split(",")]
    report: dict[str, Any] = {
        "model": config.get("preset", "?"),
        "date": time.strftime("%Y-%m-%d"),
        "max_length": config["max_length"],
        "by_window": {},
    }
    for name, examples in splits(version_dir, args.cache_dir).items():
        for width in widths:
            figures = compare(model, tokenizer, width, examples)
            report["by_window"].setdefault(str(width), {})[name] = {"split": len(examples), **figures}
            print(f"{name:<24} window {width:>4}: {figures}", flush=True)
    path = args.out / "long_texts.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    from bench.publish import rewrite_own_runs

    rewrite_own_runs(args.out)
    print(f"wrote {path} and its section of {args.out / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
