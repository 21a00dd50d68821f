"""The whole build: data -> tokenizer -> model -> training -> export -> verification -> version."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from model_export import plots, teacher
from model_export.calibrate import Reliability, fit_temperature, fold_into, reliability
from model_export.config import LABELS, Preset, Recipe, TrainConfig
from model_export.data import (
    Example,
    Source,
    Splits,
    load_corpus,
    load_file,
    normalise,
    patient_splits,
    split,
    tweet_splits,
)
from model_export.export import config_json, publish, stage, write_config
from model_export.model import SentimentTransformer
from model_export.pretrained import fetch, load_encoder
from model_export.quantize import DevSplit, quantize
from model_export.report import int8_figures, markdown
from model_export.report import report as domain_report
from model_export.scoring import DevSet, evaluate, logits_of
from model_export.soft_labels import distil
from model_export.tokenizer import encode, load_tokenizer, train_wordpiece
from model_export.train import train
from model_export.verify import verify

log = logging.getLogger(__name__)


def build(
    recipe: Recipe,
    out: Path,
    cache_dir: Path,
    data_file: Path | None = None,
    with_int8: bool = True,
) -> Path:
    """Train, export and verify a model; returns the new version directory under `out`."""
    started = time.monotonic()
    train_config: TrainConfig = recipe.train
    data = assemble(train_config, cache_dir, data_file)
    source, splits, train_set, dev_sets = data.source, data.splits, data.train, data.dev_sets
    people, added, balanced = data.people, data.added, data.balanced
    calibration_only = data.calibration_only
    tutor = None
    if recipe.preset is Preset.LARGE:  # the teacher itself is the model
        tutor = teacher.fine_tune(
            cache_dir, train_set, balanced, dev_sets, teacher.TeacherConfig.of(train_config)
        )
        model, tokenizer = tutor.model, tutor.tokenizer
    elif recipe.pretrained:
        encoder_dir = fetch(cache_dir)
        tokenizer = load_tokenizer(encoder_dir / "tokenizer.json", train_config.max_length)
        model = load_encoder(encoder_dir, recipe.model)
    else:
        tokenizer = train_wordpiece(
            [e.text for e in train_set], train_config.vocab_size, train_config.max_length
        )
        torch.manual_seed(train_config.seed)
        model = SentimentTransformer(dataclasses.replace(recipe.model, vocab_size=tokenizer.get_vocab_size()))

    def ids_of(items: list[Example]) -> list[list[int]]:
        return encode(tokenizer, [e.text for e in items])

    train_labels = [e.label for e in train_set]
    distillation, taught = None, None
    if train_config.teacher and tutor is None:
        train_set, train_labels, distillation, taught = distil(data, train_config, cache_dir)
    train_ids, test_ids = ids_of(train_set), ids_of(splits.test)
    dev_pairs = [(ids_of(d), [e.label for e in d]) for d in dev_sets]
    calibration_pairs = dev_pairs + [(ids_of(d), [e.label for e in d]) for d in calibration_only]
    truncated = sum(1 for ids in train_ids if len(ids) >= train_config.max_length)
    if tutor is not None:
        history, taught = tutor.history, tutor.report
    else:
        history = train(
            model,
            train_ids,
            train_labels,
            dev_pairs,
            train_config,
            len(LABELS),
            [model.tok_embed.weight] if train_config.freeze_embeddings else [],
            head=list(model.classifier.parameters()) if recipe.pretrained else [],
            balanced=balanced,
            distillation=distillation,
        )
    calibration = calibrate(model, calibration_pairs)
    test_scores = evaluate(model, test_ids, [e.label for e in splits.test], len(LABELS))
    dev_scores = evaluate(model, dev_pairs[0][0], dev_pairs[0][1], len(LABELS))
    log.info("test accuracy %.4f, macro-F1 %.4f", test_scores.accuracy, test_scores.macro_f1)
    metrics = {"test": dataclasses.asdict(test_scores), "dev": dataclasses.asdict(dev_scores)}
    for name, (cut, _) in people.items():
        scores = evaluate(model, ids_of(cut.test), [e.label for e in cut.test], len(LABELS))
        metrics[name.replace(" ", "_") + "_test"] = dataclasses.asdict(scores)
        log.info("%s (test split) accuracy %.4f", name, scores.accuracy)
    config = config_json(
        recipe,
        dataclasses.asdict(model.config),
        source,
        splits,
        train_size=len(train_set),
        train_truncated=truncated,
        history=history,
        seconds=time.monotonic() - started,
        metrics=metrics,
    )
    config["calibration"] = calibration
    if taught is not None:
        config["training"]["teacher"] = taught
    if added:
        config["training"]["data"]["added_to_train"] = added
    staging = stage(out, model, tokenizer, config)
    try:
        config["verification"] = verify(staging, model)
        if with_int8:
            # every corpus's dev split, trained on or not: none is a test text
            corpora = [("movies" if data_file is None else data_file.name, splits.dev)]
            corpora += [(name, cut.dev) for name, (cut, _) in people.items()]
            dev = [
                DevSplit(f"{name} (dev split)", [e.text for e in d], [e.label for e in d])
                for name, d in corpora
            ]
            config["quantized"] = quantize(
                staging, dev, [e.text for e in splits.test], [e.label for e in splits.test]
            )
        write_config(staging, config)
        plots.training_curve(history, staging / "training_curve.png")
        plots.confusion_matrix(test_scores.confusion, LABELS, staging / "confusion_matrix.png")
        plots.reliability_diagram(
            Reliability(**calibration["dev_before"]),
            Reliability(**calibration["dev_after"]),
            calibration["temperature"],
            staging / "reliability.png",
        )
        (staging / "metrics.json").write_text(
            json.dumps({"metrics": config["metrics"], "history": config["training"]["history"]}, indent=2)
            + "\n"
        )
        # accuracy per kind of text beside the word-list scorers: domains.json, domains.png
        table = domain_report(staging, cache_dir=cache_dir if data_file is None else None)
        if "quantized" in config:  # what --variant auto serves by
            config["quantized"]["accuracy"] = int8_figures(table)
            write_config(staging, config)
        log.info("accuracy per kind of text:\n%s", markdown(table))
    except Exception:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    final = publish(staging)
    log.info("wrote %s in %.0f s", final, time.monotonic() - started)
    return final


@dataclasses.dataclass
class Data:
    """What a build learns from and is judged by."""

    source: Source  # the main corpus
    splits: Splits  # the main corpus's splits
    train: list[Example]  # the main corpus's training split, then each people-labelled corpus's
    dev_sets: list[list[Example]]  # the dev splits model selection compares
    calibration_only: list[list[Example]]  # dev splits too small to choose by; they calibrate
    balanced: list[range]  # rows of `train` sampled per epoch, label against label
    people: dict[str, tuple[Splits, Source]]  # people-labelled corpora, trained on or only scored
    added: list[dict[str, object]]  # corpora added to the training split, for config.json

    def held_out(self) -> list[str]:
        """Every dev and test text of every corpus."""
        texts = [e.text for e in self.splits.dev + self.splits.test]
        return texts + [e.text for cut, _ in self.people.values() for e in cut.dev + cut.test]


def assemble(train_config: TrainConfig, cache_dir: Path, data_file: Path | None = None) -> Data:
    """The corpora read, split and put together as the recipe asks."""
    examples: list[Example]
    source: Source
    examples, source = load_file(data_file) if data_file else load_corpus(cache_dir)
    splits = split(examples, seed=train_config.seed)
    train_set = splits.train[: train_config.max_train_examples]
    dev_sets = [splits.dev]
    balanced: list[range] = []
    added: list[dict[str, object]] = []
    # corpora that people wrote and labelled: training data, and their test splits real-text yardsticks
    people = people_corpora(cache_dir, train_config, everything=data_file is None)
    held_out = {normalise(e.text) for e in splits.dev + splits.test}
    calibration_only: list[list[Example]] = []
    for name, (cut, corpus_source) in people.items():
        if not wanted(name, train_config):
            continue
        rows = [e for e in cut.train if normalise(e.text) not in held_out]
        balanced.append(range(len(train_set), len(train_set) + len(rows)))
        train_set = train_set + rows
        # the tweets' dev split is large enough to choose by; the patient reviews' only calibrates
        (dev_sets if name == "tweets" else calibration_only).append(cut.dev)
        added.append(
            dataclasses.asdict(corpus_source)
            | {
                "corpus": name,
                "rows": len(rows),
                "rows_by_label": {n: sum(e.label == i for e in rows) for i, n in enumerate(LABELS)},
                "dev": len(cut.dev),
                "test": len(cut.test),
                "near_duplicates_of_dev_or_test_dropped": cut.duplicates_dropped,
                "sampling": "per epoch: every row of the smaller label and as many of the larger, in turn",
            }
        )
        log.info("added %d %s to the training split (%s)", len(rows), name, corpus_source.name)
    log.info(
        "data %s: %d rows, %d distinct examples -> train %d, dev %d, test %d "
        "(%d duplicates and %d conflicting rows dropped; skipped %s)",
        source.name,
        source.rows_read,
        len(splits.train) + len(splits.dev) + len(splits.test),
        len(train_set),
        len(splits.dev),
        len(splits.test),
        splits.duplicates_dropped,
        splits.conflicting_dropped,
        source.rows_skipped,
    )
    return Data(source, splits, train_set, dev_sets, calibration_only, balanced, people, added)


def wanted(corpus: str, config: TrainConfig) -> bool:
    """Whether the recipe trains on a people-labelled corpus."""
    return config.tweets if corpus == "tweets" else config.patient_reviews


def people_corpora(
    cache_dir: Path, config: TrainConfig, everything: bool
) -> dict[str, tuple[Splits, Source]]:
    """The people-labelled corpora's fixed splits: those the recipe trains on, or all of them beside
    the default corpus (their test splits are scored whatever the recipe)."""
    loaders = {"tweets": tweet_splits, "patient reviews": patient_splits}
    return {
        name: load(cache_dir, config.seed)
        for name, load in loaders.items()
        if everything or wanted(name, config)
    }


def calibrate(model: SentimentTransformer, dev_sets: Sequence[DevSet]) -> dict[str, Any]:
    """Fit the temperature on the dev sets pooled, fold it into the classifier, and say what it did."""
    ids = [x for set_ids, _ in dev_sets for x in set_ids]
    labels = [y for _, set_labels in dev_sets for y in set_labels]
    logits = logits_of(model, ids)
    temperature = fit_temperature(logits, labels)
    before, after = reliability(logits, labels), reliability(logits, labels, temperature)
    fold_into(model.classifier, temperature)
    log.info("temperature %.3f: dev calibration error %.4f -> %.4f", temperature, before.ece, after.ece)
    return {
        "method": "temperature scaling on the dev splits, folded into the classifier's last layer",
        "temperature": round(temperature, 4),
        "dev_texts": len(labels),
        "dev_before": dataclasses.asdict(before),
        "dev_after": dataclasses.asdict(after),
    }


__all__ = ["build", "Preset"]
