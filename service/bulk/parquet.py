"""Parquet for the bulk command (pyarrow): read in record batches, written as part files that are
joined at the end.

A Parquet file's footer is written when it is closed, so a file cut short by a killed process cannot
be read, let alone appended to. Each chunk is therefore written as its own complete file under
OUT.parts/ (to a temporary name, then renamed), and the job file counts them; when every chunk is
written, the parts are copied into OUT one row group each, so memory holds one chunk at a time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from service.bulk.files import Chunk, FileProblem, _check_column, _check_names, parts_dir, remove_parts
from service.bulk.predictor import kind_of

try:
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError as err:  # pragma: no cover - the bulk extra installs it
    raise FileProblem("Parquet needs pyarrow: pip install 'sentiment-service[bulk]' (or pyarrow)") from err


class ParquetReader:
    def __init__(self, path: Path, column: str) -> None:
        self.path = path
        try:
            self.file = pq.ParquetFile(path)
        except (OSError, pa.ArrowException) as err:
            raise FileProblem(f"{path} is not a Parquet file pyarrow can read: {err}") from err
        self.schema = self.file.schema_arrow
        self.column = column
        try:
            _check_column(column, self.schema.names, path)
        except FileProblem:
            self.file.close()
            raise
        self.total = self.file.metadata.num_rows

    def chunks(self, skip: int, size: int) -> Iterator[Chunk]:
        """Rows after the first `skip`: whole row groups before them are not read at all."""
        metadata = self.file.metadata
        first, before = 0, 0
        while first < metadata.num_row_groups and before + metadata.row_group(first).num_rows <= skip:
            before += metadata.row_group(first).num_rows
            first += 1
        groups = list(range(first, metadata.num_row_groups))
        if not groups:
            return
        reached = before
        drop = skip - before
        for batch in self.file.iter_batches(batch_size=size, row_groups=groups):
            if drop:
                cut = min(drop, batch.num_rows)
                batch, drop, reached = batch.slice(cut), drop - cut, reached + cut
                if not batch.num_rows:
                    continue
            reached += batch.num_rows
            yield Chunk(batch.column(self.column).to_pylist(), batch, reached)

    def close(self) -> None:
        self.file.close()


def prediction_type(column: str) -> pa.DataType:
    """The Arrow type of a prediction column, the same in every part."""
    return {
        "string": pa.string(),
        "float": pa.float64(),
        "bool": pa.bool_(),
        "int": pa.int64(),
        "strings": pa.list_(pa.string()),
        "floats": pa.list_(pa.float32()),
    }[kind_of(column)]


class ParquetWriter:
    def __init__(self, path: Path, schema: pa.Schema, added: Sequence[str], prefix: str) -> None:
        _check_names(added, schema.names, path)
        self.path = path
        self.parts = parts_dir(path)
        self.added = {name: prediction_type(name[len(prefix) :]) for name in added}
        self.schema = schema
        for name, kind in self.added.items():
            self.schema = self.schema.append(pa.field(name, kind))
        self.count = 0

    def resume(self, state: dict[str, Any]) -> None:
        if "parts" not in state:
            remove_parts(self.path)
        self.parts.mkdir(parents=True, exist_ok=True)
        self.count = int(state.get("parts", 0))
        for stray in self.parts.iterdir():  # a part a killed run wrote after its last record
            if stray.name >= self._name(self.count) or stray.suffix != ".parquet":
                stray.unlink()

    def _name(self, index: int) -> str:
        return f"part-{index:06d}.parquet"

    def write(self, chunk: Chunk, columns: dict[str, list[Any]]) -> dict[str, Any]:
        batch: pa.RecordBatch = chunk.rows
        arrays = [*batch.columns]
        arrays += [pa.array(columns[name], type=kind) for name, kind in self.added.items()]
        table = pa.Table.from_arrays(arrays, schema=self.schema)
        target = self.parts / self._name(self.count)
        temporary = target.with_suffix(".tmp")
        pq.write_table(table, temporary)
        with temporary.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, target)
        self.count += 1
        return {"parts": self.count}

    def close(self) -> None:
        """Nothing is held open between chunks: each part is a whole file."""

    def finish(self) -> None:
        """Join the parts into the output, one row group each, then remove them."""
        temporary = self.path.with_name(self.path.name + ".tmp")
        with pq.ParquetWriter(temporary, self.schema) as out:
            for index in range(self.count):
                out.write_table(pq.read_table(self.parts / self._name(index), schema=self.schema))
        os.replace(temporary, self.path)
        remove_parts(self.path)
