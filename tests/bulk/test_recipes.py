"""The bulk recipes as docs/bulk.md gives them, on a real Ray cluster and a real Spark session (both
local, two CPUs): each gives the bulk command's answers for the same file."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.e2e.test_predict import sentences

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.long


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory, model_root: Path) -> tuple[Path, list[dict[str, Any]]]:
    """An input of 600 texts with a few bad cells, and what the bulk command writes for it."""
    folder = tmp_path_factory.mktemp("recipes")
    texts: list[str | None] = [*sentences(600, seed=21)]
    texts[17], texts[301] = None, ""
    source = folder / "in.parquet"
    pq.write_table(pa.table({"id": range(600), "text": texts}), source, row_group_size=100)
    out = folder / "out.parquet"
    command = ["-m", "service", "score", source, out, "--model-dir", model_root, "--quiet"]
    subprocess.run([sys.executable, *map(str, command)], cwd=ROOT, check=True, timeout=300)
    return source, pq.read_table(out).to_pylist()


def same(rows: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    rows = sorted(rows, key=lambda row: row["id"])
    assert [row["id"] for row in rows] == [row["id"] for row in want]
    for row, answer in zip(rows, want, strict=True):
        assert row["label"] == answer["label"] and row["error"] == answer["error"]
        assert row["truncated"] == answer["truncated"] and row["num_tokens"] == answer["num_tokens"]
        if answer["score"] is None:
            assert row["score"] is None or row["score"] != row["score"]  # missing, or NaN in pandas
        else:
            assert row["score"] == pytest.approx(answer["score"], abs=1e-6)


# Ray's own settings module warns about its own deprecated default, and PySpark about pandas 3
@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray")
def test_ray_data_map_batches_with_the_predictor(
    scored: tuple[Path, list[dict[str, Any]]], model_root: Path
) -> None:
    import ray

    from service.bulk.predictor import SentimentPredictor

    source, want = scored
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        dataset = ray.data.read_parquet(str(source)).repartition(6)
        result = dataset.map_batches(
            SentimentPredictor,
            fn_constructor_kwargs={"model_dir": str(model_root), "threads": 1},
            batch_size=128,
            batch_format="pandas",
            # two actors, one ONNX Runtime thread each; half a logical CPU each leaves room on
            # two cores for Ray Data's own tasks (listing, reading), which would otherwise wait
            compute=ray.data.ActorPoolStrategy(size=2),
            num_cpus=0.5,
        )
        rows = result.take_all()
    finally:
        ray.shutdown()
    for row in rows:  # pandas' missing values (NA, NaN) as the file's (None)
        for name, value in row.items():
            if value is not None and not isinstance(value, str) and pd.isna(value):
                row[name] = None
    same(rows, want)


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    os.environ["PYSPARK_PYTHON"] = sys.executable  # the executors' Python: this one, with the service
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "128")
        .getOrCreate()
    )
    yield session
    session.stop()


def test_spark_column_function_from_a_path_and_shipped_with_the_job(
    scored: tuple[Path, list[dict[str, Any]]], model_root: Path, spark: Any
) -> None:
    from service.bulk.spark import sentiment_udf

    source, want = scored
    frame = spark.read.parquet(str(source)).repartition(3)
    udf = sentiment_udf(str(model_root))
    rows = frame.withColumn("s", udf("text")).select("id", "text", "s.*").collect()
    same([row.asDict() for row in rows], want)

    spark.sparkContext.addFile(str(model_root), recursive=True)
    shipped = sentiment_udf(model_root.name)  # found with SparkFiles.get on the driver and executors
    rows = frame.select("id", shipped("text").alias("s")).select("id", "s.*").collect()
    same([row.asDict() for row in rows], want)


def test_spark_column_function_refuses_a_model_it_cannot_find(spark: Any) -> None:
    from service.bulk.spark import sentiment_udf

    with pytest.raises(FileNotFoundError, match="neither a directory here nor a file shipped"):
        sentiment_udf("no-such-model")
