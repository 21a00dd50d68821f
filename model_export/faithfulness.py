"""How far each explanation of the served model can be trusted, measured as ERASER does (DeYoung
et al. 2020): take away the words an explanation ranks highest and see what happens to the answer.

- Comprehensiveness at k%: the drop in the predicted label's probability when the top k% of the
  text's words (at least one) are removed. High is faithful: the words it names carried the answer.
- Sufficiency at k%: the drop when only those words are kept. Low is faithful: they alone suffice.

Each is reported for k in 10, 20 and 50% and as their mean (ERASER's aggregate). The explanations
ranked: the server's word contributions (core/explain.py: sampled Shapley values, the default, and
occlusion), attention rollout and the last layer's [CLS] attention (a word's weight is its tokens'
sum), and a random ranking as the floor. Words are removed the way the server's explanations remove
them (their tokens deleted, [CLS] and [SEP] kept), through the graph the server would run
(--variant auto), with the server's own tokenizer, words and explanation code: the figures are those
of what a caller is shown.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from model_contract import pad
from service.core.attention import cls_attention, rollout
from service.core.explain import Method, Word, explanation, plan, without
from service.core.preprocess import Preprocessor
from service.core.results import softmax
from service.core.runtime import OnnxModel
from service.versions.store import load_spec

FRACTIONS = (0.1, 0.2, 0.5)
METHODS = ("shapley", "occlusion", "rollout", "cls_attention", "random")
BATCH = 64  # sequences per run: sorted by length, little padding
Run = Callable[[Sequence[Sequence[int]]], NDArray[np.float32]]


@dataclass(frozen=True)
class TextScores:
    """One text's comprehensiveness and sufficiency per method and fraction."""

    comprehensiveness: dict[str, list[float]]
    sufficiency: dict[str, list[float]]


def runner(model: OnnxModel) -> Run:
    """Probabilities of many sequences, run in batches of similar length."""

    def run(sequences: Sequence[Sequence[int]]) -> NDArray[np.float32]:
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        rows = np.zeros((len(sequences), 0), np.float32)
        for begin in range(0, len(order), BATCH):
            chosen = order[begin : begin + BATCH]
            logits, _ = model.run(*pad([sequences[i] for i in chosen]), with_attention=False)
            if rows.shape[1] == 0:
                rows = np.zeros((len(sequences), logits.shape[1]), np.float32)
            rows[chosen] = softmax(logits)
        return rows

    return run


def rankings(
    ids: list[int], words: list[Word], model: OnnxModel, run: Run, rng: random.Random
) -> tuple[int, float, dict[str, NDArray[np.float64]]]:
    """The predicted label, its probability, and each method's score per word (higher: ranked first)."""
    array = np.array([ids], np.int64)
    logits, attentions = model.run(array, np.ones_like(array), with_attention=True)
    assert attentions is not None
    probabilities = softmax(logits)[0]
    label = int(probabilities.argmax())
    weights = attentions[0]
    per_token = {"rollout": rollout(weights), "cls_attention": cls_attention(weights)}
    scores: dict[str, NDArray[np.float64]] = {
        name: np.array([float(values[list(w.tokens)].sum()) for w in words])
        for name, values in per_token.items()
    }
    for method in (Method.SHAPLEY, Method.OCCLUSION):
        chosen = plan(ids, words, method)
        # towards the label of the text alone: int8's dynamic quantisation scales a batch's activations
        # together, so a text near the boundary may change label beside others
        explained = explanation(chosen, run(chosen.sequences), label)
        scores[method.value] = explained.contributions.astype(np.float64)
    scores["random"] = np.array([rng.random() for _ in words])
    return label, float(probabilities[label]), scores


def score_text(
    ids: list[int], words: list[Word], model: OnnxModel, run: Run, rng: random.Random
) -> TextScores:
    """Comprehensiveness and sufficiency of every method on one text."""
    label, full, scores = rankings(ids, words, model, run, rng)
    n = len(words)
    variants: list[list[int]] = []
    for name in METHODS:
        order = np.argsort(-scores[name], kind="stable")
        for fraction in FRACTIONS:
            top = order[: max(1, math.ceil(fraction * n))].tolist()
            variants.append(without(ids, words, top))  # the top words removed
            variants.append(without(ids, words, sorted(set(range(n)) - set(top))))  # only they kept
    drops = full - run(variants)[:, label]
    comprehensive, sufficient = drops[0::2].tolist(), drops[1::2].tolist()
    per = len(FRACTIONS)
    return TextScores(
        {name: comprehensive[i * per : (i + 1) * per] for i, name in enumerate(METHODS)},
        {name: sufficient[i * per : (i + 1) * per] for i, name in enumerate(METHODS)},
    )


def measure(
    model_dir: Path, splits: dict[str, list[str]], threads: int = 2, variant: str = "auto"
) -> dict[str, object]:
    """The table for each split's texts (each needs at least two words), through the graph the
    server runs for this version with --variant `variant`."""
    spec = load_spec(model_dir.parent, model_dir.parent.name, int(model_dir.name), variant)
    model = OnnxModel(spec.onnx_path, intra_op_threads=threads)
    pre = Preprocessor(spec.path / "tokenizer.json", spec.max_length, 1, 1_000_000)
    run = runner(model)
    result: dict[str, object] = {"variant": spec.variant, "fractions": list(FRACTIONS), "splits": {}}
    for split, texts in splits.items():
        rng = random.Random(13)
        encoded, words = pre.tokenize(texts), pre.words(texts)
        per_text = [
            score_text(e.ids, w, model, run, rng) for e, w in zip(encoded, words, strict=True) if len(w) >= 2
        ]
        table = {}
        for name in METHODS:
            comprehensive = np.mean([t.comprehensiveness[name] for t in per_text], axis=0)
            sufficient = np.mean([t.sufficiency[name] for t in per_text], axis=0)
            table[name] = {
                "comprehensiveness": [round(float(v), 4) for v in comprehensive],
                "sufficiency": [round(float(v), 4) for v in sufficient],
                "comprehensiveness_mean": round(float(comprehensive.mean()), 4),
                "sufficiency_mean": round(float(sufficient.mean()), 4),
            }
        result["splits"][split] = {"texts": len(per_text), "methods": table}  # type: ignore[index]
    return result


def markdown(result: dict[str, object]) -> str:
    """The table for the model card: per split, each method's mean and its ratio to rollout's."""
    lines = [
        "| split | explanation | comprehensiveness (10 / 20 / 50 %) | mean | x rollout | x random "
        "| sufficiency (10 / 20 / 50 %) | mean |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for split, entry in result["splits"].items():  # type: ignore[attr-defined]
        methods = entry["methods"]
        for name in METHODS:
            row = methods[name]
            comp = row["comprehensiveness_mean"]
            lines.append(
                f"| {split} ({entry['texts']}) | {name} | "
                + " / ".join(f"{v:.3f}" for v in row["comprehensiveness"])
                + f" | {comp:.3f} | {comp / methods['rollout']['comprehensiveness_mean']:.1f} | "
                + f"{comp / methods['random']['comprehensiveness_mean']:.1f} | "
                + " / ".join(f"{v:.3f}" for v in row["sufficiency"])
                + f" | {row['sufficiency_mean']:.3f} |"
            )
    return "\n".join(lines)


def chart(result: dict[str, object], path: Path) -> None:
    """Comprehensiveness (higher is faithful) and sufficiency (lower is) by fraction, per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = result["splits"]
    figure, axes = plt.subplots(2, len(splits), figsize=(5 * len(splits), 6.5), dpi=110, squeeze=False)  # type: ignore[arg-type]
    percents = [int(100 * f) for f in FRACTIONS]
    for column, (split, entry) in enumerate(splits.items()):  # type: ignore[attr-defined]
        for row, measure_name in enumerate(("comprehensiveness", "sufficiency")):
            axis = axes[row][column]
            for name in METHODS:
                axis.plot(percents, entry["methods"][name][measure_name], "o-", label=name)
            axis.set_xticks(percents, [f"{p}%" for p in percents])
            better = "higher" if row == 0 else "lower"
            axis.set_title(f"{split}: {measure_name} ({better} is faithful)", fontsize=9)
            axis.set_xlabel("words removed" if row == 0 else "words kept")
            axis.set_ylabel("drop in the label's probability")
            axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def write(model_dir: Path, result: dict[str, object]) -> None:
    """faithfulness.json and faithfulness.png into the version directory."""
    (model_dir / "faithfulness.json").write_text(json.dumps(result, indent=2) + "\n")
    chart(result, model_dir / "faithfulness.png")
