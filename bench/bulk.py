"""Bulk scoring four ways on the same texts, in one run (docs/bulk.md quotes it):

    python -m bench bulk --model-dir models/sentiment [--texts 100000]

The test splits of the movie snippets and the tweets, cycled to `--texts` texts in a Parquet file,
then, one after the other, on the fp32 graph with as many threads as CPUs:
1. ONNX Runtime alone (the ceiling): the texts tokenized beforehand and sorted by length over the
   whole set, batches of 32, one batch per thread side by side, one ONNX Runtime thread each; only
   the runs are timed;
2. the bulk command (`python -m service score`), Parquet in and out, timed as a user sees it;
3. Ray Data: read_parquet, map_batches with SentimentPredictor on 2 actors, write_parquet, on a
   local Ray cluster (the cluster's start is timed apart);
4. the server (`python -m service`, its answer cache off: the texts repeat) driven by the SDK's
   PredictStream (SentimentClient.stream), the texts read from the same file.
Texts/s, and CPU: the machine's busy cores during the run, from /proc/stat (nothing else should run).
Writes bench/bulk.json and its section of bench/RESULTS.md. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.run import ROOT, python, server_args, stop
from model_contract import pad
from model_contract import versions as model_versions

READY = re.compile(r"READY port=(\d+)")


def texts_for(count: int, cache_dir: Path) -> list[str]:
    from model_export.data import load_corpus, split, tweet_splits

    movies, _ = load_corpus(cache_dir)
    tweets, _ = tweet_splits(cache_dir, seed=13)
    pool = [e.text for e in split(movies, seed=13).test] + [e.text for e in tweets.test]
    return [pool[i % len(pool)] for i in range(count)]


def busy_jiffies() -> int:
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return user + nice + system + irq + softirq + steal


@contextmanager
def meter(into: dict[str, Any], count: int) -> Iterator[None]:
    """Times the block into `into`: seconds, texts/s and the machine's mean busy cores."""
    began, jiffies = time.perf_counter(), busy_jiffies()
    yield
    seconds = time.perf_counter() - began
    cores = (busy_jiffies() - jiffies) / os.sysconf("SC_CLK_TCK") / seconds
    into.update(seconds=round(seconds, 2), texts_per_s=round(count / seconds, 1), busy_cores=round(cores, 2))


def ceiling(version_dir: Path, texts: list[str], threads: int) -> dict[str, Any]:
    from service.core.preprocess import Preprocessor
    from service.core.runtime import OnnxModel

    config = json.loads((version_dir / "config.json").read_text())
    tokenizer = Preprocessor(
        version_dir / "tokenizer.json", config["max_length"], max_texts=1, max_chars=10**6
    )
    ids = sorted((encoded.ids for encoded in tokenizer.tokenize(texts)), key=len)
    batches = [pad(ids[i : i + 32]) for i in range(0, len(ids), 32)]
    model = OnnxModel(version_dir / "model.onnx", "cpu", intra_op_threads=1)
    model.run(*batches[0], False)
    lock = threading.Lock()
    queue = iter(batches)

    def work() -> None:
        while True:
            with lock:
                batch = next(queue, None)
            if batch is None:
                return
            model.run(*batch, False)

    out: dict[str, Any] = {}
    with meter(out, len(texts)):
        workers = [threading.Thread(target=work) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    return out


def bulk_command(model_dir: Path, source: Path, folder: Path, threads: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    command = ["service", "score", str(source), str(folder / "scored.parquet"), "--model-dir", str(model_dir)]
    command += ["--variant", "fp32", "--threads", str(threads), "--quiet", "--overwrite"]
    count = _rows(source)
    with meter(out, count):
        subprocess.run(python(*command), check=True, cwd=ROOT)
    return out


def _rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_rows)


def ray_job(model_dir: Path, source: Path, folder: Path) -> dict[str, Any]:
    """Runs the Ray recipe in a child process (its own cluster); the child prints its figures."""
    done = subprocess.run(
        python("bench.bulk", "--ray-child", str(model_dir), str(source), str(folder / "ray")),
        check=True,
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def ray_child(model_dir: Path, source: Path, target: Path) -> None:
    import ray

    from service.bulk.predictor import SentimentPredictor

    began = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    started = time.perf_counter() - began
    out: dict[str, Any] = {"cluster_start_s": round(started, 2)}
    with meter(out, _rows(source)):
        ray.data.read_parquet(str(source)).repartition(24).map_batches(
            SentimentPredictor,
            fn_constructor_kwargs={"model_dir": str(model_dir), "variant": "fp32", "threads": 1},
            batch_size=4096,
            batch_format="pandas",
            # two actors, one ONNX Runtime thread each; half a logical CPU each leaves room on
            # two cores for Ray Data's own tasks (listing, reading), which would otherwise wait
            compute=ray.data.ActorPoolStrategy(size=2),
            num_cpus=0.5,
        ).write_parquet(str(target))
    ray.shutdown()
    print(json.dumps(out))


def server(model_dir: Path, texts: list[str]) -> dict[str, Any]:
    from sentiment_client import SentimentClient

    flags = ["--variant", "fp32", "--cache-entries", "0"]
    process = subprocess.Popen(
        python(*server_args(model_dir, *flags)),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        match = READY.search(process.stdout.readline())
        if match is None:
            raise RuntimeError("the server did not start")
        out: dict[str, Any] = {}
        with SentimentClient(f"127.0.0.1:{match.group(1)}") as client:
            client.predict(texts[:64])  # the channel up and the model info read
            with meter(out, len(texts)):
                answered = sum(1 for _ in client.stream(texts))
        assert answered == len(texts)
        return out
    finally:
        stop(process)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "sentiment")
    parser.add_argument("--texts", type=int, default=100_000)
    parser.add_argument("--cache-dir", type=Path, default=ROOT / ".cache" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    parser.add_argument("--ray-child", nargs=3, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.ray_child:
        ray_child(*args.ray_child)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    threads = os.cpu_count() or 1
    version = model_versions(args.model_dir)[-1]
    version_dir = args.model_dir / str(version)
    texts = texts_for(args.texts, args.cache_dir)
    report: dict[str, Any] = {
        "texts": len(texts),
        "threads": threads,
        "model": json.loads((version_dir / "config.json").read_text()).get("preset", "?"),
        "date": time.strftime("%Y-%m-%d"),
    }
    with tempfile.TemporaryDirectory(prefix="bench-bulk-") as scratch:
        folder = Path(scratch)
        source = folder / "texts.parquet"
        pq.write_table(pa.table({"id": range(len(texts)), "text": texts}), source)
        runs = {
            "ceiling": lambda: ceiling(version_dir, texts, threads),
            "bulk_command": lambda: bulk_command(args.model_dir, source, folder, threads),
            "ray": lambda: ray_job(args.model_dir, source, folder),
            "server_sdk_stream": lambda: server(args.model_dir, texts),
        }
        for name, run in runs.items():
            report[name] = run()
            print(f"{name:<20} {report[name]}", flush=True)
    ceiling_rate = report["ceiling"]["texts_per_s"]
    report["bulk_over_ceiling"] = round(report["bulk_command"]["texts_per_s"] / ceiling_rate, 3)
    report["bulk_over_server"] = round(
        report["bulk_command"]["texts_per_s"] / report["server_sdk_stream"]["texts_per_s"], 2
    )
    print(f"bulk / ceiling {report['bulk_over_ceiling']}; bulk / server {report['bulk_over_server']}")
    (args.out / "bulk.json").write_text(json.dumps(report, indent=2) + "\n")
    from bench.publish import rewrite_own_runs

    rewrite_own_runs(args.out)
    print(f"wrote {args.out / 'bulk.json'} and its section of {args.out / 'RESULTS.md'}")


if __name__ == "__main__":
    main(sys.argv[1:])
