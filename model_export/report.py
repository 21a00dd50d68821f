"""Accuracy per kind of text, beside the word-list scorers VADER and TextBlob, as JSON and a PNG.

The kinds: the test splits of the movie snippets, of the people-labelled tweets (the real-text
yardstick) and of the patients' reviews (none of them used to choose anything), and each `domain`
of a labelled file, by default the project's own model_export/eval_data/other_domains.jsonl, kept
as a diagnostic of hard cases. A word-list scorer says positive when its score is at least 0
(VADER's compound score, TextBlob's polarity).

Texts the file marks as hard (`"hard": "sarcasm"`, ...) count in their kind as any other, and are
also scored by difficulty ("hard: sarcasm", ...) beside the unmarked ones ("unmarked texts"), so a
reader sees what the model gets wrong and why; those rows stay out of the mean of other kinds.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from model_export.classifier import OnnxClassifier
from model_export.config import LABELS
from model_export.data import Example, load_corpus, load_file, patient_splits, split, tweet_splits
from model_export.quantize import INT8_FILE

DEFAULT_FILE = Path(__file__).parent / "eval_data" / "other_domains.jsonl"
POSITIVE = LABELS.index("positive")
NEGATIVE = LABELS.index("negative")

MOVIES = "movie (test split)"
TWEETS = "tweets (test split)"  # the real-text yardstick: people's tweets held out of training
PATIENTS = "patient reviews (test split)"
UNMARKED = "unmarked texts"  # of the file: the ones no difficulty is marked on
HARD = "hard: "  # prefix of the rows per difficulty
MEAN = "mean of other kinds"

Scorer = Callable[[Sequence[str]], list[int]]
Table = dict[str, dict[str, float]]  # {kind: {scorer: accuracy, "texts": count}}


def vader() -> Scorer:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()
    return lambda texts: [
        POSITIVE if analyzer.polarity_scores(t)["compound"] >= 0 else NEGATIVE for t in texts
    ]


def textblob() -> Scorer:
    from textblob import TextBlob

    return lambda texts: [POSITIVE if TextBlob(t).sentiment.polarity >= 0 else NEGATIVE for t in texts]


def kinds(model_dir: Path, data: Path, cache_dir: Path | None) -> dict[str, list[Example]]:
    """The texts of each kind: the movie and tweet test splits (when the corpora are at hand) and the file's;
    then, when the file marks hard cases, its unmarked texts and its texts of each difficulty."""
    grouped: dict[str, list[Example]] = {}
    if cache_dir is not None:
        config = json.loads((model_dir / "config.json").read_text())
        seed = config.get("training", {}).get("config", {}).get("seed", 13)
        examples, _ = load_corpus(cache_dir)
        grouped[MOVIES] = list(split(examples, seed=seed).test)
        grouped[TWEETS] = list(tweet_splits(cache_dir, seed)[0].test)
        grouped[PATIENTS] = list(patient_splits(cache_dir, seed)[0].test)
    examples = load_file(data)[0]
    for example in examples:
        grouped.setdefault(example.domain or data.stem, []).append(example)
    if any(e.hard for e in examples):
        grouped[UNMARKED] = [e for e in examples if not e.hard]
        for hard in sorted({e.hard for e in examples if e.hard}):
            grouped[HARD + hard] = [e for e in examples if e.hard == hard]
    return grouped


def accuracy(predicted: Sequence[int], examples: Sequence[Example]) -> float:
    return sum(p == e.label for p, e in zip(predicted, examples, strict=True)) / len(examples)


def report(model_dir: Path, data: Path = DEFAULT_FILE, cache_dir: Path | None = None) -> Table:
    """{kind: {scorer: accuracy, "texts": n}}, plus "mean of other kinds" and the rows by
    difficulty; writes domains.json and domains.png next to metrics.json."""
    scorers: dict[str, Scorer] = {"model fp32": OnnxClassifier(model_dir).predict}
    if (model_dir / INT8_FILE).exists():
        scorers["model int8"] = OnnxClassifier(model_dir, INT8_FILE).predict
    scorers["VADER"] = vader()
    scorers["TextBlob"] = textblob()
    table: Table = {}
    for kind, examples in kinds(model_dir, data, cache_dir).items():
        texts = [e.text for e in examples]
        table[kind] = {"texts": len(examples)}
        for name, scorer in scorers.items():
            table[kind][name] = round(accuracy(scorer(texts), examples), 4)
    by_difficulty = {k: v for k, v in table.items() if k == UNMARKED or k.startswith(HARD)}
    others = [k for k in table if k not in (MOVIES, TWEETS, PATIENTS) and k not in by_difficulty]
    if others:
        mean: dict[str, float] = {
            name: round(sum(table[k][name] for k in others) / len(others), 4) for name in scorers
        }
        mean["texts"] = sum(table[k]["texts"] for k in others)
        # the mean right after the kinds it averages, before the rows by difficulty
        table = {k: v for k, v in table.items() if k not in by_difficulty} | {MEAN: mean} | by_difficulty
    (model_dir / "domains.json").write_text(json.dumps(table, indent=2) + "\n")
    chart(table, list(scorers), model_dir / "domains.png")
    return table


def int8_figures(table: Table) -> dict[str, dict[str, float]]:
    """What int8 loses against fp32 on the test splits (config.json, quantized.accuracy; the
    server's log quotes it, and judges builds older than the dev verdicts by it): each test split
    and the mean of the file's kinds, with both graphs'
    accuracy and the count of texts; empty when the table has no int8 column."""
    return {
        kind: {"texts": row["texts"], "fp32": row["model fp32"], "int8": row["model int8"]}
        for kind, row in table.items()
        if kind in (MOVIES, TWEETS, PATIENTS, MEAN) and "model int8" in row
    }


def chart(table: Table, scorers: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(table)
    width = 0.8 / len(scorers)
    figure, axis = plt.subplots(figsize=(max(7, 1.3 * len(kinds)), 4.5), dpi=110)
    for index, name in enumerate(scorers):
        positions = [k + (index - (len(scorers) - 1) / 2) * width for k in range(len(kinds))]
        axis.bar(positions, [100 * table[kind][name] for kind in kinds], width, label=name)
    axis.set_xticks(range(len(kinds)), [k.replace(" ", "\n", 1) for k in kinds], fontsize=8)
    axis.set_ylabel("accuracy, %")
    axis.set_ylim(40, 100)
    axis.grid(axis="y", alpha=0.3)
    axis.legend(fontsize=8, ncol=len(scorers))
    axis.set_title("Accuracy per kind of text")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def markdown(table: Table) -> str:
    scorers = [k for k in next(iter(table.values())) if k != "texts"]
    lines = [f"| kind | texts | {' | '.join(scorers)} |", "|---|---|" + "---|" * len(scorers)]
    for kind, row in table.items():
        cells = " | ".join(f"{100 * row[s]:.1f}" for s in scorers)
        lines.append(f"| {kind} | {row['texts']:.0f} | {cells} |")
    return "\n".join(lines)
