"""Ceiling for the model itself: ONNX Runtime in-process on the same sentences, no RPC; prints JSON.

Modes: batch1 (one sentence per run), sorted32 / unsorted32 (batches of 32, by length or as they
come). `--workers` threads each run their share with `--threads` intra-op threads per session run;
`--workers 1 --threads 2 --spin` on 2 cores gives ONNX Runtime's own batch-1 latency
(p50_ms_per_run) at its fastest: threads that spin-wait between operators, ONNX Runtime's default.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from model_contract import pad
from service.core.runtime import OnnxModel


def batches(ids: list[list[int]], mode: str) -> list[tuple[np.ndarray, np.ndarray]]:
    if mode == "batch1":
        groups = [[seq] for seq in ids]
    else:
        ordered = sorted(ids, key=len) if mode == "sorted32" else ids
        groups = [ordered[i : i + 32] for i in range(0, len(ordered), 32)]
    return [pad(group) for group in groups]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-version-dir", type=Path, required=True)
    parser.add_argument("--sentences", type=Path, required=True)
    parser.add_argument("--mode", choices=["batch1", "sorted32", "unsorted32"], default="batch1")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per session run")
    parser.add_argument("--spin", action="store_true", help="let intra-op threads spin-wait")
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--model-file", default="model.onnx", help="the graph: model.onnx or model.int8.onnx")
    args = parser.parse_args()
    config = json.loads((args.model_version_dir / "config.json").read_text())
    tokenizer = Tokenizer.from_file(str(args.model_version_dir / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(config["max_length"])
    sentences = json.loads(args.sentences.read_text())
    ids = [e.ids for e in tokenizer.encode_batch(sentences)]
    model = OnnxModel(
        args.model_version_dir / args.model_file, "cpu", 1, lone_threads=args.threads, lone_spin=args.spin
    )
    wide = model.lone_session is not None  # more than one thread: the session built for them
    work = batches(ids, args.mode)
    model.run(*work[0], False, wide)
    done = [0] * args.workers
    latencies: list[float] = []
    stop_at = time.perf_counter() + args.duration

    def worker(index: int) -> None:
        position = index
        while time.perf_counter() < stop_at:
            input_ids, mask = work[position % len(work)]
            began = time.perf_counter()
            model.run(input_ids, mask, False, wide)
            latencies.append(time.perf_counter() - began)
            done[index] += input_ids.shape[0]
            position += args.workers

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(args.workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    p50 = 1000 * statistics.median(latencies)
    print(json.dumps({"sentences_per_s": sum(done) / elapsed, "p50_ms_per_run": p50}))


if __name__ == "__main__":
    main()
