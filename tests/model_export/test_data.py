"""Reading labelled files and splitting them."""

from __future__ import annotations

from pathlib import Path

import pytest

from model_export.data import DataError, Example, load_file, normalise, split


def test_jsonl_and_csv_read(tmp_path: Path) -> None:
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text('{"text": "good", "label": "positive"}\n\n{"text": "bad", "label": 0}\n')
    examples, source = load_file(jsonl)
    assert examples == [Example("good", 1), Example("bad", 0)]
    assert source.rows_read == 2 and len(source.sha256) == 64
    csv = tmp_path / "a.csv"
    csv.write_text('text,label\n"fine, really",pos\nawful,negative\n')
    assert load_file(csv)[0] == [Example("fine, really", 1), Example("awful", 0)]
    # the kind of text and its difficulty travel with each example, in either format
    marked = tmp_path / "m.jsonl"
    marked.write_text('{"text": "great, broken again", "label": 0, "domain": "tweet", "hard": "sarcasm"}\n')
    assert load_file(marked)[0] == [Example("great, broken again", 0, "tweet", "sarcasm")]
    table = tmp_path / "m.csv"
    table.write_text("text,label,domain,hard\nnot bad at all,1,product,negation\n")
    assert load_file(table)[0] == [Example("not bad at all", 1, "product", "negation")]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "b.jsonl",
            '{"text": "ok", "label": "positive"}\n{"text": "x"\n',
            r"b.jsonl:2: not valid JSON",
        ),
        ("b.jsonl", '{"text": "ok", "label": "meh"}\n', r"b.jsonl:1: label 'meh' is not one of"),
        ("b.jsonl", '{"text": "  ", "label": 1}\n', r"b.jsonl:1: text is empty"),
        ("b.jsonl", '["ok", 1]\n', r'b.jsonl:1: expected an object with "text" and "label"'),
        ("b.csv", "words,label\nok,1\n", r"b.csv:1: the CSV header must name"),
        ("b.csv", "text,label\nok,1\nno\n", r"b.csv:3: expected 2 columns"),
        ("b.txt", "ok\n", r"unknown format"),
    ],
)
def test_malformed_files_name_line_and_problem(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        load_file(path)


def test_binary_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"text": "\xff\xfe", "label": 1}\n')
    with pytest.raises(DataError, match="not UTF-8"):
        load_file(path)


def test_split_is_deterministic_disjoint_and_deduplicated() -> None:
    examples = [Example(f"sentence number {i}", i % 2) for i in range(200)]
    examples += [Example("Sentence  NUMBER 3", 1), Example("sentence number 4", 1)]  # dup; conflict
    first, second = split(examples, seed=7), split(examples, seed=7)
    assert first == second
    assert first.duplicates_dropped == 1 and first.conflicting_dropped == 2
    keys = [{normalise(e.text) for e in part} for part in (first.train, first.dev, first.test)]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    assert sum(len(k) for k in keys) == 199
    assert split(examples, seed=8).test != first.test


def test_split_refuses_too_few() -> None:
    with pytest.raises(DataError, match="too few"):
        split([Example("a", 0), Example("b", 1)], seed=1)
