"""The bulk path on Spark: a column function that scores a text column where the data lives.

    udf = sentiment_udf("models/sentiment")      # a path every executor can read ...
    scored = df.withColumn("sentiment", udf("text")).select("*", "sentiment.*").drop("sentiment")

... or the model shipped with the job: `spark.sparkContext.addFile("models/sentiment",
recursive=True)` and then `sentiment_udf("sentiment")`, which finds it with SparkFiles.get on the
driver and on each executor. A pandas column function (Arrow batches of
spark.sql.execution.arrow.maxRecordsPerBatch rows): each Python worker loads the model once
(SentimentPredictor, kept for the worker's life) and scores each batch cut by length, as the bulk
command does. A null or non-text cell gets an error in its row, never a failed task.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from service.bulk.predictor import PANDAS_NULLABLE, SentimentPredictor, kind_of

# one predictor per settings in each Python worker: Spark reuses workers across tasks
# (spark.python.worker.reuse), so the model loads once per worker, not once per batch
_LOADED: dict[tuple[Any, ...], SentimentPredictor] = {}
_LOCK = threading.Lock()


def locate(model_dir: str) -> Path:
    """The model root: `model_dir` where it is a directory here, else the file shipped with the job
    under that name (SparkContext.addFile)."""
    path = Path(model_dir)
    if path.is_dir():
        return path
    from pyspark import SparkFiles

    shipped = Path(SparkFiles.get(model_dir))
    if not shipped.is_dir():
        raise FileNotFoundError(
            f"{model_dir} is neither a directory here nor a file shipped with the job "
            "(spark.sparkContext.addFile(path, recursive=True))"
        )
    return shipped


def _predictor(
    model_dir: str, version: int, variant: str, threads: int, attention: str
) -> SentimentPredictor:
    key = (model_dir, version, variant, threads, attention)
    with _LOCK:
        if key not in _LOADED:
            _LOADED[key] = SentimentPredictor(
                locate(model_dir), version=version, variant=variant, threads=threads, attention=attention
            )
        return _LOADED[key]


def sentiment_udf(
    model_dir: str,
    *,
    version: int | None = None,
    variant: str = "auto",
    threads: int = 1,
    attention: str = "none",
) -> Any:
    """A Spark column function: a text column in, a struct of the prediction columns out (label,
    score, prob_<label>..., truncated, num_tokens, error; tokens, rollout and cls_attention with
    attention="summary"). threads: batches at once in each Python worker (Spark runs one worker per
    task slot, so 1 by default)."""
    import pandas as pd
    from pyspark.sql import types
    from pyspark.sql.pandas.functions import pandas_udf

    # checks the settings and the model on the driver, before any task starts; the version it
    # chose and its columns are the executors'
    checked = SentimentPredictor(
        locate(model_dir), version=version, variant=variant, threads=1, attention=attention
    )
    checked.close()
    chosen, names = checked.spec.version, checked.column_names()
    del checked
    spark_types = {
        "string": types.StringType(),
        "float": types.DoubleType(),
        "bool": types.BooleanType(),
        "int": types.LongType(),
        "strings": types.ArrayType(types.StringType()),
        "floats": types.ArrayType(types.DoubleType()),
    }
    schema = types.StructType([types.StructField(name, spark_types[kind_of(name)]) for name in names])

    def score(texts: pd.Series) -> pd.DataFrame:
        predictor = _predictor(model_dir, chosen, variant, threads, attention)
        columns = predictor.columns(texts.tolist())
        # object columns, so that a missing float reaches Spark as null, not NaN
        return pd.DataFrame(
            {
                name: pd.Series(values, dtype=object)
                if PANDAS_NULLABLE.get(name) is None
                else pd.array(values, dtype=PANDAS_NULLABLE[name])
                for name, values in columns.items()
            },
            index=texts.index,
        )

    # the hints as objects (this module's are strings), from which Spark takes the function's kind
    score.__annotations__ = {"texts": pd.Series, "return": pd.DataFrame}
    return pandas_udf(score, schema)  # type: ignore[call-overload]
