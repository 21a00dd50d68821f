"""`python -m service score IN OUT`: score a CSV, JSON lines or Parquet file without a server.

The job resumes where it stopped. After each chunk is written (and synced), OUT.job.json records how
far the input was read and how much of the output holds; a rerun of the same command after a crash
or a kill reads the record, cuts off whatever was written after it, and goes on from there. So no
row is lost or written twice. The record names the input file (its size and modification time), the
column, the model version and its graph's sha256: a rerun that differs in any of them is refused
rather than mixing two jobs in one file. The record goes when the job ends.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.bulk.files import (
    CsvReader,
    CsvWriter,
    FileProblem,
    JsonlReader,
    JsonlWriter,
    Reader,
    Writer,
    format_of,
    remove_parts,
)
from service.bulk.predictor import DEFAULT_MODEL_DIR, MAX_TEXT_CHARS, SentimentPredictor
from service.core.errors import ModelDirectoryError

CHUNK_ROWS = 4096  # texts sorted by length together, and what a resumed job may redo


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m service score",
        description="Score every text of a CSV, JSON lines or Parquet file with a model version in this "
        "process (no server), writing the same format with the prediction columns added. Killed, the "
        "same command resumes the job.",
    )
    parser.add_argument("input", type=Path, help="a .csv (with a header row), .jsonl or .parquet file")
    parser.add_argument("output", type=Path, help="the file to write, in the input's format")
    parser.add_argument("--column", default="text", help="the column holding the texts (default: text)")
    parser.add_argument(
        "--model-dir", type=Path, default=DEFAULT_MODEL_DIR, help="the model root, as the server takes it"
    )
    parser.add_argument(
        "--model-version", type=int, default=None, help="the version to use (default: the highest)"
    )
    parser.add_argument(
        "--variant",
        choices=["auto", "fp32", "int8"],
        default="auto",
        help="the graph, as the server's --variant",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="batches at once, one thread each (default: every CPU this process may use)",
    )
    parser.add_argument(
        "--attention",
        choices=["none", "summary"],
        default="none",
        help="summary adds tokens, rollout and cls_attention",
    )
    parser.add_argument(
        "--prefix",
        default="",
        help="put before the added columns' names (when the input has a 'label' column, say)",
    )
    parser.add_argument(
        "--chunk-rows", type=int, default=CHUNK_ROWS, help="rows read, scored and written together"
    )
    parser.add_argument(
        "--max-text-chars", type=int, default=MAX_TEXT_CHARS, help="longer texts get an error"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace OUTPUT when it exists from a finished job"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.chunk_rows < 1 or (args.threads is not None and args.threads < 1):
        parser.error("--chunk-rows and --threads take a positive number")
    return args


def job_path(output: Path) -> Path:
    return output.with_name(output.name + ".job.json")


def open_files(args: argparse.Namespace, added: list[str]) -> tuple[Reader, Writer]:
    kind = format_of(args.input)
    if format_of(args.output) != kind:
        raise FileProblem(
            f"{args.output} must be {kind} like {args.input}: the output keeps the input's format"
        )
    if kind == "csv":
        csv_reader = CsvReader(args.input, args.column)
        return csv_reader, _or_close(csv_reader, lambda: CsvWriter(args.output, csv_reader.header, added))
    if kind == "jsonl":
        return JsonlReader(args.input, args.column), JsonlWriter(args.output, added)
    from service.bulk.parquet import ParquetReader, ParquetWriter

    parquet_reader = ParquetReader(args.input, args.column)
    return parquet_reader, _or_close(
        parquet_reader, lambda: ParquetWriter(args.output, parquet_reader.schema, added, args.prefix)
    )


def _or_close(reader: Reader, make: Callable[[], Writer]) -> Writer:
    """The writer `make` builds; the reader closed when it refuses (a column clash)."""
    try:
        return make()
    except FileProblem:
        reader.close()
        raise


def identity(args: argparse.Namespace, predictor: SentimentPredictor) -> dict[str, Any]:
    """What a resumed job must share with the one that started the output."""
    stat = args.input.stat()
    spec = predictor.spec
    config = json.loads((spec.path / "config.json").read_text())
    return {
        "input": str(args.input.resolve()),
        "input_bytes": stat.st_size,
        "input_mtime_ns": stat.st_mtime_ns,
        "column": args.column,
        "prefix": args.prefix,
        "attention": args.attention,
        "model": {
            "version": spec.version,
            "variant": spec.variant,
            "sha256": config["sha256"][spec.onnx_path.name],
        },
    }


def save(path: Path, job: dict[str, Any]) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(job, indent=1))
    os.replace(temporary, path)


def start_job(args: argparse.Namespace, ident: dict[str, Any]) -> dict[str, Any]:
    """The job to go on with (resumed) or a new one; FileProblem when the output is another's."""
    record = job_path(args.output)
    if record.exists():
        job: dict[str, Any] = json.loads(record.read_text())
        if job.get("identity") != ident:
            raise FileProblem(
                f"{record} records a job that differs from this one (input file, column, prefix, "
                f"attention or model): it has {job.get('identity')}; run the same command to finish "
                f"it, or remove {args.output} and {record} to start again"
            )
        return job
    if args.output.exists() and not args.overwrite:
        raise FileProblem(f"{args.output} exists and no unfinished job is recorded for it; pass --overwrite")
    remove_parts(args.output)
    return {"identity": ident, "rows": 0, "errors": 0, "reached": 0, "state": {}}


def run(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as held:  # closed last opened first, however the run ends
        predictor = SentimentPredictor(
            args.model_dir,
            version=args.model_version,
            variant=args.variant,
            threads=args.threads,
            attention=args.attention,
            column=args.column,
            max_text_chars=args.max_text_chars,
        )
        held.callback(predictor.close)
        names = predictor.column_names()
        added = [args.prefix + name for name in names]
        reader, writer = open_files(args, added)
        held.callback(reader.close)
        held.callback(writer.close)
        return score_files(args, predictor, reader, writer, names, added)


def score_files(
    args: argparse.Namespace,
    predictor: SentimentPredictor,
    reader: Reader,
    writer: Writer,
    names: list[str],
    added: list[str],
) -> int:
    job = start_job(args, identity(args, predictor))
    resumed = job["rows"]
    writer.resume(job["state"])
    record = job_path(args.output)
    started = time.monotonic()
    scored = 0
    from service.bulk.progress import Bar

    with Bar(reader.total, job["reached"], resumed, quiet=args.quiet) as bar:
        for chunk in reader.chunks(job["reached"], args.chunk_rows):
            columns = predictor.columns(chunk.texts)
            errors = columns["error"]
            for index, why in chunk.errors.items():
                errors[index] = why
            state = writer.write(
                chunk, {prefixed: columns[name] for prefixed, name in zip(added, names, strict=True)}
            )
            count = len(chunk.texts)
            scored += count
            job.update(
                rows=job["rows"] + count,
                errors=job["errors"] + sum(error is not None for error in errors),
                reached=chunk.reached,
                state=state,
            )
            save(record, job)
            bar.advance(chunk.reached, job["rows"], scored / (time.monotonic() - started))
    writer.finish()
    record.unlink()
    seconds = time.monotonic() - started
    again = f" ({resumed} of them in an earlier run)" if resumed else ""
    print(
        f"scored {job['rows']} rows into {args.output}{again}: {job['errors']} with an error "
        f"(column {args.prefix}error); {scored} in {seconds:.1f} s, "
        f"{scored / max(seconds, 1e-9):.0f} texts/s",
        file=sys.stderr,
    )
    return 0


def main(argv: list[str]) -> int:
    args = parse(argv)
    if not args.input.is_file():
        print(f"python -m service score: {args.input} is not a file", file=sys.stderr)
        return 2
    try:
        return run(args)
    except FileProblem as err:
        print(f"python -m service score: {err}", file=sys.stderr)
        return 2
    except (ModelDirectoryError, ValueError) as err:
        print(f"python -m service score: {err}", file=sys.stderr)
        return 1
