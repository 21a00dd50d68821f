"""A million texts from one Parquet file through the bulk command, killed halfway and resumed:

    python -m bench.bulk_million --model-dir models/sentiment [--rows 1000000]

The test splits of the movie snippets and the tweets, cycled to `--rows` rows (an `id` column
counting them) in row groups of 100,000. The command runs with its defaults; its resident memory is
read from /proc every half second beside how many rows its job file records. Once half the rows are
recorded it is killed (SIGKILL) and the same command is run again, which finishes the job. Then the
output is checked: every id once, in order, and a sample of rows' labels equal to the predictor's
in this process. Writes bench/bulk_million.json and the bulk section of bench/RESULTS.md. The
memory figures say whether memory grows with the input; the speed is bench.bulk's to measure.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bulk import texts_for
from bench.run import ROOT, python


def rss_mib(pid: int) -> float | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def recorded(job: Path) -> int | None:
    """The rows the job file records, or None where there is none yet."""
    try:
        return int(json.loads(job.read_text())["rows"])
    except (FileNotFoundError, ValueError, KeyError):
        return None


def run(command: list[str], job: Path, kill_at: int | None) -> tuple[list[tuple[int, float]], float]:
    """Runs the command, sampling (rows recorded, RSS MiB); kills it once `kill_at` rows are."""
    began = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    samples: list[tuple[int, float]] = []
    while process.poll() is None:
        rss = rss_mib(process.pid)
        rows = recorded(job)
        if rss is not None and rows is not None:
            samples.append((rows, round(rss, 1)))
        if kill_at is not None and rows is not None and rows >= kill_at:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.5)
    _, err = process.communicate()
    if kill_at is None and process.returncode != 0:
        raise RuntimeError(err)
    return samples, time.perf_counter() - began


def by_tenth(samples: list[tuple[int, float]], total: int) -> dict[str, float]:
    """The highest RSS seen while each tenth of the rows was being scored."""
    out: dict[str, float] = {}
    for rows, rss in samples:
        tenth = f"{min(9, rows * 10 // total) * 10}%"
        out[tenth] = max(out.get(tenth, 0.0), rss)
    return dict(sorted(out.items(), key=lambda item: int(item[0][:-1])))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "sentiment")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--cache-dir", type=Path, default=ROOT / ".cache" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    args = parser.parse_args(argv)
    import pyarrow as pa
    import pyarrow.parquet as pq

    from service.bulk.predictor import SentimentPredictor

    texts = texts_for(args.rows, args.cache_dir)
    with tempfile.TemporaryDirectory(prefix="bench-million-") as scratch:
        folder = Path(scratch)
        source, out = folder / "texts.parquet", folder / "scored.parquet"
        pq.write_table(pa.table({"id": range(len(texts)), "text": texts}), source, row_group_size=100_000)
        job = folder / "scored.parquet.job.json"
        command = python("service", "score", str(source), str(out), "--model-dir", str(args.model_dir))
        command += ["--quiet"]
        first, first_s = run(command, job, kill_at=len(texts) // 2)
        killed_at = recorded(job) or 0
        print(f"killed after {killed_at} rows recorded, {first_s:.0f} s", flush=True)
        second, second_s = run(command, job, kill_at=None)
        print(f"resumed and finished in {second_s:.0f} s", flush=True)
        written = pq.read_table(out, columns=["id", "label"])
        ids, scored = written.column("id").to_pylist(), written.column("label").to_pylist()
        sample = sorted(random.Random(7).sample(range(len(texts)), 2000))
        predictor = SentimentPredictor(args.model_dir, threads=1)
        want = predictor.columns([texts[i] for i in sample])["label"]
        report: dict[str, Any] = {
            "rows": len(texts),
            "model": json.loads((predictor.spec.path / "config.json").read_text()).get("preset", "?"),
            "variant": predictor.spec.variant,
            "date": time.strftime("%Y-%m-%d"),
            "killed_after_rows": killed_at,
            "seconds": round(first_s + second_s, 1),
            "rows_out": len(ids),
            "every_id_once_in_order": ids == list(range(len(texts))),
            "sample_labels_equal": [scored[i] for i in sample] == want,
            "rss_mib_by_tenth_first_run": by_tenth(first, len(texts)),
            "rss_mib_by_tenth_resumed_run": by_tenth(second, len(texts)),
        }
    print(json.dumps(report, indent=1))
    (args.out / "bulk_million.json").write_text(json.dumps(report, indent=2) + "\n")
    from bench.publish import rewrite_own_runs

    rewrite_own_runs(args.out)


if __name__ == "__main__":
    main(sys.argv[1:])
