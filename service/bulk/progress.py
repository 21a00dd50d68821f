"""The bulk command's progress bar (rich): how far through the input, rows, texts/s and time left."""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn


class Bar:
    """Progress through the input in its own unit (bytes, or rows for Parquet), from where a resumed
    job starts; silent when quiet or when standard error is not a terminal (rich decides)."""

    def __init__(self, total: int, reached: int, rows: int, quiet: bool = False) -> None:
        self._progress = Progress(
            TextColumn("scoring"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rows]} rows, {task.fields[rate]:.0f} texts/s"),
            TimeRemainingColumn(),
            disable=quiet,
            console=Console(stderr=True),
        )
        self._task = self._progress.add_task(
            "scoring", total=max(total, 1), completed=reached, rows=rows, rate=0.0
        )

    def __enter__(self) -> Bar:
        self._progress.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._progress.stop()

    def advance(self, reached: int, rows: int, rate: float) -> None:
        self._progress.update(self._task, completed=reached, rows=rows, rate=rate)
