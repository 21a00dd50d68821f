"""What a batch costs the model, the measurements the batching policy rests on (docs/batching.md).

    python -m bench.costs --model-dir models/sentiment [--variant fp32]

ONNX Runtime in-process, as the server's worker threads run it (bench.run's ceilings do the same):
1. batches of B texts of L tokens, on one thread (a narrow batch, one of two side by side) and on
   every core (a wide batch, alone): the median milliseconds per batch and per text;
2. rounds of real test-split texts (18 and 64 drawn at random, as a round at 64 callers holds),
   cut into batches by length at several padding limits (fair_queue.split_by_length, the server's
   rule): batches per round and milliseconds per text.
Prints the tables and writes them as JSON to bench/costs.json (docs/batching.md quotes it).
Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from bench.run import ROOT, sentences_file
from model_contract import pad
from model_contract import versions as model_versions
from service.core.fair_queue import Item, split_by_length
from service.core.runtime import OnnxModel
from service.ops.settings import Settings
from service.versions.assembly import batch_limits
from service.versions.store import ONNX_FILES

SIZES = (1, 2, 4, 8, 16, 32)
LENGTHS = (16, 32, 64, 128)
RATIOS = (0.1, 0.3, 0.5, 1.0)


def median_ms(model: OnnxModel, ids: np.ndarray, mask: np.ndarray, wide: bool, seconds: float) -> float:
    model.run(ids, mask, False, wide)
    times: list[float] = []
    stop_at = time.perf_counter() + seconds
    while time.perf_counter() < stop_at or len(times) < 3:
        began = time.perf_counter()
        model.run(ids, mask, False, wide)
        times.append(time.perf_counter() - began)
    return 1000 * statistics.median(times)


def shapes(model: OnnxModel, seconds: float) -> list[dict[str, Any]]:
    rows = []
    for wide in (False, True):
        for length in LENGTHS:
            for size in SIZES:
                ids = np.full((size, length), 100, dtype=np.int64)
                ms = median_ms(model, ids, np.ones_like(ids), wide, seconds)
                rows.append(
                    {"wide": wide, "length": length, "size": size, "ms": ms, "ms_per_text": ms / size}
                )
    return rows


def rounds(model: OnnxModel, ids: list[list[int]], size: int, count: int) -> list[dict[str, Any]]:
    rng = random.Random(size)
    drawn = [rng.sample(ids, size) for _ in range(count)]
    rows = []
    for wide in (False, True):
        for ratio in RATIOS:
            limits = batch_limits(Settings(max_padding_ratio=ratio), 256, 2, True)
            times, batches = [], []
            for texts in drawn:
                parts = split_by_length([Item(seq, None, None, None) for seq in texts], limits)  # type: ignore[arg-type]
                batches.append(len(parts))
                began = time.perf_counter()
                for part in parts:
                    model.run(*pad([item.ids for item in part]), False, wide)
                times.append(time.perf_counter() - began)
            ms = 1000 * statistics.median(times)
            rows.append(
                {
                    "wide": wide,
                    "round": size,
                    "max_padding_ratio": ratio,
                    "batches": statistics.mean(batches),
                    "ms_per_text": ms / size,
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=Path("models/sentiment"))
    parser.add_argument("--variant", choices=sorted(ONNX_FILES), default="fp32")
    parser.add_argument("--seconds", type=float, default=0.4, help="per shape")
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "sentiment-service")
    args = parser.parse_args()
    version_dir = args.model_dir / str(model_versions(args.model_dir)[-1])
    cores = len(os.sched_getaffinity(0))
    model = OnnxModel(version_dir / ONNX_FILES[args.variant], "cpu", 1, lone_threads=cores, lone_spin=True)
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer.from_file(str(version_dir / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(json.loads((version_dir / "config.json").read_text())["max_length"])
    texts = json.loads(sentences_file(out, args.cache_dir, 1000).read_text())
    ids = [e.ids for e in tokenizer.encode_batch(texts)]
    by_shape = shapes(model, args.seconds)
    print(f"ms per batch (ms per text), {args.variant}; rows: tokens per text, columns: texts per batch")
    for wide in (False, True):
        print(f"{'every core, alone' if wide else 'one thread'}:")
        for length in LENGTHS:
            cells = [r for r in by_shape if r["wide"] == wide and r["length"] == length]
            print(f"  {length:>4} " + " ".join(f"{r['ms']:7.1f} ({r['ms_per_text']:4.1f})" for r in cells))
    by_round = rounds(model, ids, 18, 30) + rounds(model, ids, 64, 15)
    print("rounds of test-split texts cut by length at each padding limit: batches, ms per text")
    for row in by_round:
        where = "every core" if row["wide"] else "one thread"
        print(
            f"  round {row['round']:>3}, {where:<10}, padding <= {row['max_padding_ratio']:.1f}: "
            f"{row['batches']:4.1f} batches, {row['ms_per_text']:5.2f} ms per text"
        )
    lengths = sorted(len(seq) for seq in ids)
    result = {
        "model": str(version_dir),
        "variant": args.variant,
        "cores": cores,
        "text_tokens": {"p50": lengths[len(lengths) // 2], "max": lengths[-1]},
        "shapes": by_shape,
        "rounds": by_round,
    }
    path = ROOT / "bench" / "costs.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
