"""`python -m service score`: files in, the same files with predictions out, resumable after a kill."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from service.bulk.predictor import SentimentPredictor
from service.bulk.score import main
from tests.e2e.test_predict import sentences

ROOT = Path(__file__).resolve().parents[2]


def score(*args: object, check: int | None = 0) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "service", "score", *map(str, args), "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check is not None:
        assert done.returncode == check, done.stderr
    return done


@pytest.fixture(scope="module")
def predictor(model_root: Path) -> SentimentPredictor:
    return SentimentPredictor(model_root, threads=1)


def expected(predictor: SentimentPredictor, texts: list[object]) -> list[dict[str, Any]]:
    columns = predictor.columns(texts)
    return [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def test_csv_keeps_every_column_and_adds_the_predictions(
    tmp_path: Path, model_root: Path, predictor: SentimentPredictor
) -> None:
    texts = sentences(40, seed=5)
    rows: list[list[str]] = [["id", "text", "note"]]
    rows += [[str(i), text, f"n{i}"] for i, text in enumerate(texts)]
    rows += [["40", "", "empty"], ["41", 'a line\nbroken, with a comma and "quotes"', "quoted"]]
    source = tmp_path / "in.csv"
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    # a row that is not UTF-8 (Latin-1 bytes) is answered with an error and kept as it was
    source.write_bytes(buffer.getvalue().encode() + b"42,caf\xe9 cr\xe8me,latin1\r\n")
    out = tmp_path / "out.csv"
    done = score(source, out, "--model-dir", model_root, "--threads", "2", "--chunk-rows", "7")
    assert "scored 43 rows" in done.stderr and "2 with an error" in done.stderr
    assert not (tmp_path / "out.csv.job.json").exists()

    written = out.read_bytes()
    assert b"caf\xe9 cr\xe8me" in written  # the undecodable cell written back byte for byte
    got = list(csv.DictReader(io.StringIO(written.decode("utf-8", "surrogateescape"))))
    names = ["id", "text", "note", *predictor.column_names()]
    assert list(got[0]) == names
    assert [row["id"] for row in got] == [str(i) for i in range(43)]
    assert [row["note"] for row in got[:41]] == [row[2] for row in rows[1:42]]
    want = expected(predictor, [*texts, "", rows[-1][1]])
    for row, answer in zip(got, want, strict=False):
        assert row["label"] == (answer["label"] or "")  # CSV writes a missing value as nothing
        if answer["error"] is None:
            assert float(row["score"]) == pytest.approx(answer["score"], abs=1e-6)
            assert int(row["num_tokens"]) == answer["num_tokens"]
            assert row["error"] == ""
    assert got[40]["error"] == "the text is empty or only whitespace" and got[40]["label"] == ""
    assert got[41]["label"] == want[41]["label"] != ""
    assert got[42]["error"] == "the text is not valid UTF-8"


def test_json_lines_keep_their_fields_and_a_broken_line_gets_an_error(
    tmp_path: Path, model_root: Path, predictor: SentimentPredictor
) -> None:
    texts = sentences(12, seed=6)
    lines = [json.dumps({"id": i, "body": text, "meta": {"k": i}}) for i, text in enumerate(texts)]
    lines += ['{"id": 12, "body": 5}', "{not json", '["a", "list"]', json.dumps({"id": 15})]
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    score(source, out, "--model-dir", model_root, "--column", "body", "--attention", "summary")

    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(got) == 16
    summary = SentimentPredictor(model_root, threads=1, attention="summary")
    for row, answer, text in zip(got, expected(summary, texts), texts, strict=False):
        assert row["body"] == text and row["meta"] == {"k": row["id"]}
        assert row["label"] == answer["label"] and row["tokens"] == answer["tokens"]
        assert row["rollout"] == pytest.approx(answer["rollout"], abs=1e-6)
    assert got[12]["error"] == "the text is not a string but int" and got[12]["label"] is None
    assert got[13]["error"].startswith("the line is not JSON") and got[13]["line"] == "{not json"
    assert got[14]["error"] == "the line is not a JSON object"
    assert got[15]["error"] == "the text is missing (the cell is empty)" and got[15]["id"] == 15


def test_parquet_keeps_its_schema_and_types_the_predictions(
    tmp_path: Path, model_root: Path, predictor: SentimentPredictor
) -> None:
    texts: list[str | None] = [*sentences(30, seed=7), None, "  "]
    table = pa.table({"id": pa.array(range(32), pa.int32()), "text": texts})
    source = tmp_path / "in.parquet"
    pq.write_table(table, source, row_group_size=10)
    out = tmp_path / "out.parquet"
    score(source, out, "--model-dir", model_root, "--prefix", "p_", "--chunk-rows", "8")

    got = pq.read_table(out)
    assert got.schema.field("id").type == pa.int32()
    assert got.schema.field("p_score").type == pa.float64()
    assert got.schema.field("p_truncated").type == pa.bool_()
    assert got.schema.field("p_num_tokens").type == pa.int64()
    assert got.column("id").to_pylist() == list(range(32))
    want = expected(predictor, list(texts))
    assert got.column("p_label").to_pylist() == [answer["label"] for answer in want]
    assert got.column("p_error").to_pylist()[-2:] == [
        "the text is missing (the cell is empty)",
        "the text is empty or only whitespace",
    ]
    assert not (tmp_path / "out.parquet.parts").exists()


def write_input(kind: str, path: Path, texts: list[str]) -> None:
    if kind == "csv":
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["id", "text"])
            writer.writerows([i, text] for i, text in enumerate(texts))
    elif kind == "jsonl":
        path.write_text("".join(json.dumps({"id": i, "text": text}) + "\n" for i, text in enumerate(texts)))
    else:
        pq.write_table(pa.table({"id": range(len(texts)), "text": texts}), path, row_group_size=50)


def read_rows(kind: str, path: Path) -> list[Any]:
    if kind == "parquet":
        return pq.read_table(path).to_pylist()
    return path.read_bytes().splitlines()


@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet"])
def test_a_job_killed_midway_resumes_with_no_row_lost_or_written_twice(
    tmp_path: Path, model_root: Path, kind: str
) -> None:
    texts = [text for seed in range(8) for text in sentences(250, seed=100 + seed)]
    source = tmp_path / f"in.{kind}"
    write_input(kind, source, texts)
    whole = tmp_path / f"whole.{kind}"
    score(source, whole, "--model-dir", model_root, "--chunk-rows", "50", "--threads", "1")

    out = tmp_path / f"out.{kind}"
    record = tmp_path / f"out.{kind}.job.json"
    command = [sys.executable, "-m", "service", "score", source, out, "--model-dir", model_root]
    job = subprocess.Popen(
        [*map(str, command), "--chunk-rows", "50", "--threads", "1", "--quiet"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    rows = 0
    while time.monotonic() < deadline and rows < 400:
        time.sleep(0.05)
        try:
            rows = json.loads(record.read_text())["rows"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            continue
    os.kill(job.pid, signal.SIGKILL)
    job.wait(timeout=30)
    assert 400 <= rows < len(texts), "the job should be killed partway"
    if kind != "parquet":  # a half-written chunk after the last record: the resumed job cuts it off
        with out.open("ab") as handle:
            handle.write(b'{"id": 999999, "text": "half a line')

    done = score(source, out, "--model-dir", model_root, "--chunk-rows", "50", "--threads", "1")
    assert "in an earlier run" in done.stderr
    assert read_rows(kind, out) == read_rows(kind, whole)
    assert not record.exists()


def test_it_refuses_what_would_mix_or_lose_work(
    tmp_path: Path, model_root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def score(*args: object, check: int = 0) -> SimpleNamespace:
        """The command in this process (the same main() as `python -m service score`)."""
        code = main([*map(str, args), "--quiet"])
        stderr = capsys.readouterr().err
        assert code == check, stderr
        return SimpleNamespace(returncode=code, stderr=stderr)

    source = tmp_path / "in.csv"
    write_input("csv", source, sentences(5, seed=8))
    out = tmp_path / "out.csv"
    score(source, out, "--model-dir", model_root)
    first = out.read_bytes()

    again = score(source, out, "--model-dir", model_root, check=2)
    assert "exists" in again.stderr and "--overwrite" in again.stderr
    assert out.read_bytes() == first
    score(source, out, "--model-dir", model_root, "--overwrite")
    assert out.read_bytes() == first

    # an unfinished job recorded for another column (or prefix, model, input) is not mixed in
    (tmp_path / "out.csv.job.json").write_text(
        json.dumps({"identity": {"column": "other"}, "rows": 1, "errors": 0, "reached": 10, "state": {}})
    )
    mixed = score(source, out, "--model-dir", model_root, "--overwrite", check=2)
    assert "differs from this one" in mixed.stderr and out.read_bytes() == first
    (tmp_path / "out.csv.job.json").unlink()

    missing = score(source, tmp_path / "b.csv", "--model-dir", model_root, "--column", "body", check=2)
    assert "no column 'body'" in missing.stderr and "['id', 'text']" in missing.stderr
    labelled = tmp_path / "labelled.csv"
    labelled.write_text("text,label\ngood,positive\n")
    clash = score(labelled, tmp_path / "c.csv", "--model-dir", model_root, check=2)
    assert "['label']" in clash.stderr and "--prefix" in clash.stderr
    score(labelled, tmp_path / "c.csv", "--model-dir", model_root, "--prefix", "predicted_")
    assert (tmp_path / "c.csv").read_text().splitlines()[0].startswith("text,label,predicted_label,")

    other = score(source, tmp_path / "d.jsonl", "--model-dir", model_root, check=2)
    assert "keeps the input's format" in other.stderr
    unknown = score(tmp_path / "in.txt", tmp_path / "e.txt", "--model-dir", model_root, check=2)
    assert "is not a file" in unknown.stderr
    (tmp_path / "in.txt").write_text("x")
    suffix = score(tmp_path / "in.txt", tmp_path / "e.txt", "--model-dir", model_root, check=2)
    assert "use .csv, .jsonl or .parquet" in suffix.stderr
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    header = score(empty, tmp_path / "f.csv", "--model-dir", model_root, check=2)
    assert "starts with a header row" in header.stderr

    no_model = score(source, tmp_path / "g.csv", "--model-dir", tmp_path / "nowhere", check=1)
    assert "nowhere" in no_model.stderr and "Traceback" not in no_model.stderr
    assert not (tmp_path / "g.csv").exists()
