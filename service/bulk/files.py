"""The bulk command's files: CSV, JSON lines and Parquet, read in chunks and written back with the
prediction columns added, every input column kept as it was.

Reading and writing stream, a chunk at a time, so memory stays flat however long the file is. Every
writer can resume: CSV and JSON lines are appended to, and a rerun first cuts the output back to
the last chunk the job file recorded (a chunk half-written when the process was killed goes); a
Parquet file cannot be appended to, so its chunks are written as complete part files beside the
output and joined into it, one row group each, when the last is written.
Bytes that are not UTF-8 are carried through unchanged (surrogateescape) and the text that holds
them gets an error rather than a guess.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}


class FileProblem(Exception):
    """A file the command cannot read or write as asked: the message names it and says why."""


def format_of(path: Path) -> str:
    found = FORMATS.get(path.suffix.lower())
    if found is None:
        raise FileProblem(
            f"{path}: cannot tell the format from the suffix {path.suffix!r}; use .csv, .jsonl or .parquet"
        )
    return found


@dataclass
class Chunk:
    """Rows read together: their texts (whatever the cells held), the rows as the writer needs them,
    and how far into the input they reach (bytes, or rows for Parquet)."""

    texts: list[object]
    rows: Any
    reached: int
    errors: dict[int, str] = field(default_factory=dict)  # rows the reader found broken, and why


class Reader(Protocol):
    total: int  # the input's size, in the unit Chunk.reached counts

    def chunks(self, skip: int, size: int) -> Iterator[Chunk]: ...

    def close(self) -> None: ...


class Writer(Protocol):
    def resume(self, state: dict[str, Any]) -> None: ...

    def write(self, chunk: Chunk, columns: dict[str, list[Any]]) -> dict[str, Any]: ...

    def finish(self) -> None: ...

    def close(self) -> None: ...


def _check_column(column: str, names: Sequence[str], path: Path) -> int:
    if column not in names:
        raise FileProblem(f"{path} has no column {column!r}; it has {list(names)}: choose one with --column")
    return list(names).index(column)


def _check_names(added: Sequence[str], names: Sequence[str], path: Path) -> None:
    clash = sorted(set(added) & set(names))
    if clash:
        raise FileProblem(
            f"{path} already has the columns {clash} that scoring adds; name them apart with --prefix"
        )


def _lines(handle: IO[bytes], skip_bytes: int) -> Iterator[tuple[str, int]]:
    """Each line decoded, with the byte offset just after it."""
    at = skip_bytes
    for raw in handle:
        at += len(raw)
        yield raw.decode("utf-8", "surrogateescape"), at


class CsvReader:
    def __init__(self, path: Path, column: str) -> None:
        self.path = path
        self.total = path.stat().st_size
        self._handle = path.open("rb")
        try:
            header_line = self._handle.readline()
            header = next(csv.reader([header_line.decode("utf-8", "surrogateescape")]), None)
            if not header:
                raise FileProblem(f"{path} is empty: a CSV file to score starts with a header row")
            self.header: list[str] = header
            self.start = len(header_line)
            self.index = _check_column(column, self.header, path)
        except FileProblem:
            self._handle.close()
            raise

    def chunks(self, skip: int, size: int) -> Iterator[Chunk]:
        """Rows after the first `skip` bytes past the header were read (a resumed job's)."""
        self._handle.seek(self.start + skip)
        lines = _lines(self._handle, self.start + skip)
        reached = [self.start + skip]

        def text_lines() -> Iterator[str]:
            for line, at in lines:
                reached[0] = at
                yield line

        rows: list[list[str]] = []
        for row in csv.reader(text_lines()):
            rows.append(row)
            if len(rows) == size:
                yield self._chunk(rows, reached[0])
                rows = []
        if rows:
            yield self._chunk(rows, reached[0])

    def _chunk(self, rows: list[list[str]], reached: int) -> Chunk:
        index = self.index
        texts: list[object] = [row[index] if index < len(row) else None for row in rows]
        return Chunk(texts, rows, reached - self.start)

    def close(self) -> None:
        self._handle.close()


class JsonlReader:
    def __init__(self, path: Path, column: str) -> None:
        self.path = path
        self.column = column
        self.total = path.stat().st_size
        self._handle = path.open("rb")

    def chunks(self, skip: int, size: int) -> Iterator[Chunk]:
        self._handle.seek(skip)
        rows: list[Any] = []
        texts: list[object] = []
        errors: dict[int, str] = {}
        at = skip
        for line, at in _lines(self._handle, skip):
            if not line.strip():
                continue  # a blank line is no row, and stays out of the output
            try:
                row = json.loads(line)
            except ValueError as err:
                row = err
            if isinstance(row, dict):
                texts.append(row.get(self.column))
            else:
                why = f"is not JSON: {row}" if isinstance(row, Exception) else "is not a JSON object"
                errors[len(rows)] = f"the line {why}"
                row = {"line": line.rstrip("\r\n")[:200]}
                texts.append(None)
            rows.append(row)
            if len(rows) == size:
                yield Chunk(texts, rows, at, errors)
                rows, texts, errors = [], [], {}
        if rows:
            yield Chunk(texts, rows, at, errors)

    def close(self) -> None:
        self._handle.close()


def cell(value: Any) -> str:
    """A prediction value as a CSV cell: empty for none, lists as JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


class _Appender:
    """A text output appended a chunk at a time, synced before the job file says so."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: IO[str] | None = None

    def open(self, cut_to: int | None) -> IO[str]:
        if cut_to is None:
            handle = self.path.open("w", encoding="utf-8", errors="surrogateescape", newline="")
        else:
            with self.path.open("r+b") as raw:
                raw.truncate(cut_to)  # what a killed run wrote past its last recorded chunk
            handle = self.path.open("a", encoding="utf-8", errors="surrogateescape", newline="")
        self._handle = handle
        return handle

    def synced(self) -> int:
        assert self._handle is not None
        self._handle.flush()
        os.fsync(self._handle.fileno())
        return self._handle.tell()

    def finish(self) -> None:
        self.close()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


class CsvWriter(_Appender):
    def __init__(self, path: Path, header: Sequence[str], added: Sequence[str]) -> None:
        super().__init__(path)
        self.header = list(header)
        self.added = list(added)
        _check_names(added, header, path)

    def resume(self, state: dict[str, Any]) -> None:
        handle = self.open(state.get("bytes"))
        self._csv = csv.writer(handle)
        if "bytes" not in state:
            self._csv.writerow([*self.header, *self.added])

    def write(self, chunk: Chunk, columns: dict[str, list[Any]]) -> dict[str, Any]:
        width = len(self.header)
        added = [columns[name] for name in self.added]
        for i, row in enumerate(chunk.rows):
            fitted = row[:width] + [""] * (width - len(row))
            self._csv.writerow([*fitted, *(cell(values[i]) for values in added)])
        return {"bytes": self.synced()}


class JsonlWriter(_Appender):
    def __init__(self, path: Path, added: Sequence[str]) -> None:
        super().__init__(path)
        self.added = list(added)

    def resume(self, state: dict[str, Any]) -> None:
        self._out = self.open(state.get("bytes"))

    def write(self, chunk: Chunk, columns: dict[str, list[Any]]) -> dict[str, Any]:
        added = [(name, columns[name]) for name in self.added]
        lines = []
        for i, row in enumerate(chunk.rows):
            clash = [name for name, _ in added if name in row and i not in chunk.errors]
            if clash:  # a JSON line has no header to check up front: this row's fields would be lost
                raise FileProblem(
                    f"{self.path}: an input row already has the fields {clash} that scoring adds; "
                    "name them apart with --prefix"
                )
            out = {**row, **{name: values[i] for name, values in added}}
            lines.append(json.dumps(out, ensure_ascii=False) + "\n")
        self._out.write("".join(lines))
        return {"bytes": self.synced()}


def parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def remove_parts(out: Path) -> None:
    shutil.rmtree(parts_dir(out), ignore_errors=True)
