"""The bulk path's predictor: one model version loaded in this process, texts scored in batches of
similar length on ONNX Runtime, with no server, network or event loop between.

It takes the server's own steps, not copies of them: the model directory's checks
(versions/store.load_spec: contract, sha256, labels), the tokenizer and its limits
(core/preprocess), batches cut by length (core/fair_queue.split_by_length), the batch's run
(core/postprocess.make_run_fn) and each text's answer (core/results.text_result). So a text gets the
same label and probabilities here as from the server's version of the same graph.

`threads` batches run side by side, each on one ONNX Runtime thread, as the server runs its batches
under load: single-threaded runs waste no time synchronising threads (docs/batching.md measures
both ways). A text that cannot be scored (empty, not a string, over the character limit, nothing the
tokenizer can read) gets an error, never an exception that loses the others.

Importing this module loads neither grpc, starlette nor torch: Ray actors and Spark executors need
only onnxruntime, tokenizers and numpy (and pandas for data frames).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_contract import pad
from service.core.fair_queue import ItemResult, split_by_length
from service.core.postprocess import make_run_fn
from service.core.preprocess import UNREADABLE, Encoded, Preprocessor
from service.core.results import AttentionMode, TextResult, text_result
from service.core.runtime import OnnxModel
from service.ops.cpus import available_cpus
from service.versions.store import load_spec

DEFAULT_MODEL_DIR = Path("models/sentiment")
# the server's defaults (service/ops/settings.py): a batch of at most 32 texts and 1,024 padded
# tokens, and as long as the server reads
MAX_BATCH_SIZE = 32
MAX_BATCH_TOKENS = 1024
MAX_PADDING_RATIO = 0.1
MAX_TEXT_CHARS = 20_000


@dataclass(frozen=True)
class BulkLimits:
    """How texts are cut into batches (fair_queue.SplitLimits)."""

    max_batch_size: int = MAX_BATCH_SIZE
    max_batch_tokens: int = MAX_BATCH_TOKENS
    max_padding_ratio: float = MAX_PADDING_RATIO


@dataclass(frozen=True)
class _Waiting:
    """A readable text by its place among those given."""

    index: int
    encoded: Encoded

    @property
    def length(self) -> int:
        return self.encoded.length


def _pandas_missing(value: object) -> bool:
    """pandas' own missing value (a string column's), without importing pandas where it is not."""
    pandas = sys.modules.get("pandas")
    return pandas is not None and value is pandas.NA


def not_text(value: object) -> str | None:
    """Why `value` is not a text to score (None, a number, a missing cell), or None for a string."""
    if isinstance(value, str):
        if value.isascii():
            return None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # bytes a file held that are not UTF-8, carried as surrogates
            return "is not valid UTF-8"
        return None
    if value is None or (isinstance(value, float) and math.isnan(value)) or _pandas_missing(value):
        return "is missing (the cell is empty)"
    return f"is not a string but {type(value).__name__}"


# pandas' nullable types for the columns whose plain type has no missing value (bool, int)
PANDAS_NULLABLE = {"truncated": "boolean", "num_tokens": "Int64"}

# what each prediction column holds, for the file and data frame formats to type it
COLUMN_KINDS = {
    "label": "string",
    "score": "float",
    "truncated": "bool",
    "num_tokens": "int",
    "error": "string",
    "tokens": "strings",
    "rollout": "floats",
    "cls_attention": "floats",
}


def prediction_columns(labels: Sequence[str], summary: bool) -> list[str]:
    """The columns a prediction adds, in order; kind_of() says what each holds."""
    names = ["label", "score", *(f"prob_{label}" for label in labels), "truncated", "num_tokens", "error"]
    return [*names, "tokens", "rollout", "cls_attention"] if summary else names


def kind_of(column: str) -> str:
    """string, float, bool, int, strings or floats (a probability column is a float)."""
    return COLUMN_KINDS.get(column, "float")


class SentimentPredictor:
    """A model version loaded once; call predict() with texts, or the predictor itself with a data
    frame (Ray Data's map_batches, pandas) to add the prediction columns.

    model_dir is the directory the server takes (versions under it: 1/, 2/ ...); version None is the
    highest; variant fp32, int8 or auto (the server's --variant); threads None uses every CPU this
    process may; attention "summary" adds each text's tokens, rollout and [CLS] attention.
    """

    def __init__(
        self,
        model_dir: str | Path = DEFAULT_MODEL_DIR,
        *,
        version: int | None = None,
        variant: str = "auto",
        threads: int | None = None,
        attention: str = "none",
        column: str = "text",
        max_text_chars: int = MAX_TEXT_CHARS,
        limits: BulkLimits | None = None,
    ) -> None:
        self.spec = load_spec(Path(model_dir), "sentiment", version, variant, "cpu")
        self.threads = threads or available_cpus()
        self.mode = AttentionMode(attention)
        if self.mode is AttentionMode.FULL:
            raise ValueError("attention 'full' is too large for a table; use 'summary' or 'none'")
        self.column = column
        self.limits = limits or BulkLimits()
        self.model = OnnxModel(self.spec.onnx_path, "cpu", intra_op_threads=1)
        self.preprocessor = Preprocessor(
            self.spec.path / "tokenizer.json", self.spec.max_length, max_texts=1, max_chars=max_text_chars
        )
        self._run = make_run_fn(self.model)
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="bulk") if self.threads > 1 else None

    @property
    def labels(self) -> tuple[str, ...]:
        return self.spec.labels

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    def _run_batch(self, batch: list[_Waiting]) -> list[TextResult]:
        ids, mask = pad([each.encoded.ids for each in batch])
        rows = self._run(ids, mask, [self.mode] * len(batch), False)
        size, length = ids.shape
        return [
            text_result(self.spec.labels, each.encoded, ItemResult(row, 0.0, 0.0, size, length))
            for each, row in zip(batch, rows, strict=True)
        ]

    def predict(self, texts: Sequence[object]) -> list[TextResult | str]:
        """Each text's result in order, or for a text that cannot be scored the reason, as a
        sentence's end ("is empty or only whitespace")."""
        out: list[TextResult | str | None] = [None] * len(texts)
        good: list[int] = []
        for index, value in enumerate(texts):
            problem = not_text(value)
            if problem is None:
                assert isinstance(value, str)
                problem = self.preprocessor.problem(value)
            if problem is None:
                good.append(index)
            else:
                out[index] = problem
        encoded = self.preprocessor.tokenize([texts[index] for index in good])  # type: ignore[misc]
        waiting = []
        for index, tokens in zip(good, encoded, strict=True):
            if self.preprocessor.readable(tokens):
                waiting.append(_Waiting(index, tokens))
            else:
                out[index] = UNREADABLE
        batches = split_by_length(waiting, self.limits)
        # longest first, so that no thread is left with a long batch at the end
        batches.reverse()
        done: Iterable[list[TextResult]] = (
            map(self._run_batch, batches) if self._pool is None else self._pool.map(self._run_batch, batches)
        )
        for batch, results in zip(batches, done, strict=True):
            for text, result in zip(batch, results, strict=True):
                out[text.index] = result
        return [each if each is not None else "was not scored" for each in out]

    def columns(self, texts: Sequence[object]) -> dict[str, list[Any]]:
        """The prediction columns for `texts` (column_names() says which): label, score, a
        probability per label, truncated, num_tokens, and error (None where the text was scored;
        the others None there), with tokens, rollout and cls_attention in summary mode."""
        names = self.column_names()
        out: dict[str, list[Any]] = {name: [] for name in names}
        labels = self.spec.labels
        for result in self.predict(texts):
            if isinstance(result, str):
                for name in names:
                    out[name].append(None)
                out["error"][-1] = f"the text {result}"
                continue
            out["label"].append(result.label)
            out["score"].append(result.score)
            for label, probability in zip(labels, result.probabilities.tolist(), strict=True):
                out[f"prob_{label}"].append(probability)
            out["truncated"].append(result.truncated)
            out["num_tokens"].append(result.num_tokens)
            out["error"].append(None)
            if self.mode is AttentionMode.SUMMARY:
                view = result.attention
                assert view is not None
                out["tokens"].append(list(view.tokens))
                out["rollout"].append(view.rollout.tolist())
                out["cls_attention"].append(view.cls_attention.tolist())
        return out

    def column_names(self) -> list[str]:
        return prediction_columns(self.spec.labels, self.mode is AttentionMode.SUMMARY)

    def __call__(self, batch: Any) -> Any:
        """The batch (a pandas DataFrame, or a dict of column arrays as Ray Data passes by default)
        with the prediction columns added, its own columns kept."""
        columns = self.columns(list(batch[self.column]))
        if isinstance(batch, dict):
            import numpy as np

            return {**batch, **{name: np.array(values, dtype=object) for name, values in columns.items()}}
        import pandas as pd

        out = batch.copy()
        for name, values in columns.items():  # a missing value stays missing
            nullable = PANDAS_NULLABLE.get(name)
            out[name] = values if nullable is None else pd.array(values, dtype=nullable)
        return out
