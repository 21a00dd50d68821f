"""Reading labelled files and splitting them."""

from __future__ import annotations

import hashlib
import io
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


def test_tweets_are_cleaned_and_filtered_and_every_agreed_row_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [
        ("positive", "1", "RT @someone: loved the crew &amp; the snacks http://t.co/abc"),
        ("positive", "0.9", "@JetBlue   best   flight ever"),
        ("positive", "0.5", "meh, maybe good"),  # too little agreement
        ("positive", "", "no panel recorded"),  # no agreement at all
        ("neutral", "1", "boarding now"),
        ("negative", "1", "lost my bag again"),
        ("negative", "0.8", "@delta LOST my bag   again!"),  # the same tweet to another airline
        ("negative", "0.7", "two hours on the tarmac"),
        ("negative", "1", "worst service"),
    ]
    fake_tweets_wheel(tmp_path, rows, monkeypatch)
    examples, source = data.load_tweets(tmp_path)
    positive = [e.text for e in examples if e.label == LABELS.index("positive")]
    assert positive == ["loved the crew & the snacks", "@JetBlue best flight ever"]
    negative = [e.text for e in examples if e.label == LABELS.index("negative")]
    assert negative == ["lost my bag again", "two hours on the tarmac", "worst service"]  # none left out
    assert all(e.domain == "tweet" for e in examples)
    assert source.rows_read == 10
    assert source.rows_skipped == {
        "neutral": 1,
        "low_confidence": 2,
        "not_text": 1,
        "empty": 0,
        "repeated": 1,
    }


def test_near_duplicates_are_found_by_skeleton_and_shared_word_triples() -> None:
    near = data.NearDuplicates(["@united my flight was cancelled and nobody called me back http://t.co/x"])
    assert near.matches("MY FLIGHT was cancelled, and nobody called me back!!")  # same skeleton
    # 7 of 8 word triples shared
    assert near.matches("@delta my flight was cancelled and nobody called me back. again.")
    assert not near.matches("my flight was cancelled")  # 2 of 7 word triples, below 0.5
    assert not near.matches("great crew, thanks")


def test_tweet_splits_keep_label_shares_and_train_never_nearly_repeats_test(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    positive = [("positive", "1", f"thanks for flight {i} the crew was lovely") for i in range(40)]
    negative = [("negative", "1", f"bag {i} lost again on a late flight") for i in range(160)]
    fake_tweets_wheel(tmp_path, positive + negative, monkeypatch)
    splits, _ = data.tweet_splits(tmp_path, seed=3)
    for part in (splits.dev, splits.test):
        assert sum(e.label == LABELS.index("positive") for e in part) == 4  # a tenth of each label
        assert sum(e.label == LABELS.index("negative") for e in part) == 16
    # the negative texts differ only in a number: half their word triples are shared, a near repeat
    near = data.NearDuplicates([e.text for e in splits.dev + splits.test])
    assert not any(near.matches(e.text) for e in splits.train)
    assert splits.duplicates_dropped > 0
    assert tweet_splits_again(tmp_path) == splits  # fixed by the seed


def tweet_splits_again(cache: Path) -> data.Splits:
    return data.tweet_splits(cache, seed=3)[0]


def test_the_pinned_tweets_wheel_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_tweets_wheel(tmp_path, [("positive", "1", "fine")], monkeypatch)
    monkeypatch.setattr(data, "TWEETS_WHEEL_SHA256", "0" * 64)
    with pytest.raises(data.DataError, match="delete it to download again"):
        data.load_tweets(tmp_path)


def test_patient_reviews_are_read_from_the_zip_inside_their_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    header = "\tdrugName\tcondition\treview\trating\tdate\tusefulCount"
    train = [
        header,
        '1\tA\tpain\t"It worked, I&#039;m   grateful"\tpositive\t2012\t3',
        '2\tB\tacne\t"Made it worse"\tnegative\t2013\t1',
        '3\tC\tflu\t"No change"\tneutral\t2014\t0',
    ]
    test = [header, '4\tA\tpain\t"it WORKED, i\'m grateful!"\tpositive\t2015\t2']  # a repeat
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as archive:
        archive.writestr("drugsComTrain.tsv", "\n".join(train))
        archive.writestr("drugsComTest.tsv", "\n".join(test))
    wheel = tmp_path / data.PATIENTS_WHEEL
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(data.PATIENTS_MEMBER, inner.getvalue())
    monkeypatch.setattr(data, "PATIENTS_WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    examples, source = data.load_patient_reviews(tmp_path)
    # the test file sorts first; its review and the train file's first are the same text
    assert [(e.text, LABELS[e.label], e.domain) for e in examples] == [
        ("it WORKED, i'm grateful!", "positive", "patient"),
        ("Made it worse", "negative", "patient"),
    ]
    assert source.rows_read == 4 and source.rows_skipped == {"neutral": 1, "empty": 0, "repeated": 1}
