"""The whole build: data -> tokenizer -> model -> training -> export -> verification -> version."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path

import torch

from model_export import plots
from model_export.config import LABELS, Preset, Recipe, TrainConfig
from model_export.data import Example, Source, load_corpus, load_file, load_tweets, normalise, split
from model_export.export import config_json, publish, stage, write_config
from model_export.model import SentimentTransformer
from model_export.pretrained import fetch, load_encoder
from model_export.quantize import quantize
from model_export.report import markdown
from model_export.report import report as domain_report
from model_export.tokenizer import encode, load_tokenizer, train_wordpiece
from model_export.train import evaluate, train
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
    examples: list[Example]
    source: Source
    examples, source = load_file(data_file) if data_file else load_corpus(cache_dir)
    train_config: TrainConfig = recipe.train
    splits = split(examples, seed=train_config.seed)
    train_set = splits.train[: train_config.max_train_examples]
    added: list[dict[str, object]] = []  # corpora added to the training split, for config.json
    if train_config.tweets:  # more kinds of text to learn from; dev and test stay as they were
        tweets, tweet_source = load_tweets(cache_dir, train_config.seed)
        held_out = {normalise(e.text) for e in splits.dev + splits.test}
        tweets = [e for e in tweets if normalise(e.text) not in held_out]
        train_set = train_set + tweets
        added.append(dataclasses.asdict(tweet_source) | {"rows": len(tweets)})
        log.info("added %d tweets to the training split (%s)", len(tweets), tweet_source.name)
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
    if recipe.pretrained:
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

    train_ids, dev_ids, test_ids = ids_of(train_set), ids_of(splits.dev), ids_of(splits.test)
    truncated = sum(1 for ids in train_ids if len(ids) >= train_config.max_length)
    frozen = [model.tok_embed.weight] if train_config.freeze_embeddings else []
    history = train(
        model,
        train_ids,
        [e.label for e in train_set],
        dev_ids,
        [e.label for e in splits.dev],
        train_config,
        len(LABELS),
        frozen,
        head=list(model.classifier.parameters()) if recipe.pretrained else [],
    )
    test_scores = evaluate(model, test_ids, [e.label for e in splits.test], len(LABELS))
    dev_scores = evaluate(model, dev_ids, [e.label for e in splits.dev], len(LABELS))
    log.info("test accuracy %.4f, macro-F1 %.4f", test_scores.accuracy, test_scores.macro_f1)
    config = config_json(
        recipe,
        dataclasses.asdict(model.config),
        source,
        splits,
        train_size=len(train_set),
        train_truncated=truncated,
        history=history,
        seconds=time.monotonic() - started,
        test_scores=test_scores,
        dev_scores=dev_scores,
    )
    if added:
        config["training"]["data"]["added_to_train"] = added
    staging = stage(out, model, tokenizer, config)
    try:
        config["verification"] = verify(staging, model)
        if with_int8:
            config["quantized"] = quantize(
                staging, [e.text for e in splits.test], [e.label for e in splits.test]
            )
        write_config(staging, config)
        plots.training_curve(history, staging / "training_curve.png")
        plots.confusion_matrix(test_scores.confusion, LABELS, staging / "confusion_matrix.png")
        (staging / "metrics.json").write_text(
            json.dumps({"metrics": config["metrics"], "history": config["training"]["history"]}, indent=2)
            + "\n"
        )
        # accuracy per kind of text beside the word-list scorers: domains.json, domains.png
        table = domain_report(staging, cache_dir=cache_dir if data_file is None else None)
        log.info("accuracy per kind of text:\n%s", markdown(table))
    except Exception:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    final = publish(staging)
    log.info("wrote %s in %.0f s", final, time.monotonic() - started)
    return final


__all__ = ["build", "Preset"]
