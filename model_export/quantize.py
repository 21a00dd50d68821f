"""An int8 dynamically quantised variant, with its accuracy and speed against fp32.

Not every weight takes int8 alike. Dynamic quantisation scales a MatMul's input by its own range at
run time, one scale for the whole tensor; the feed-forward output projection reads the GELU's output,
whose few very large values stretch that range so the many small ones round to nothing. A deep
model compounds it over its layers. So the build tries plans in order of speed (every weight int8,
then the feed-forward output projections left in fp32, ...) and keeps the first whose accuracy on
dev stays within TOLERANCE of fp32's over every dev text and within SPLIT_TOLERANCE on each
corpus's dev split: chosen on dev, reported on test.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

from model_contract import pad
from model_export.classifier import OnnxClassifier
from model_export.scoring import Scores
from model_export.tokenizer import encode

INT8_FILE = "model.int8.onnx"
# what a plan may lose against fp32 on every dev text pooled (about 3,000 in a default build: the
# precise estimate), and on any one corpus's dev split (smaller, so noisier: half a point of 1,636
# tweets is 8 texts), where it catches a kind of text the plan hurts
TOLERANCE = 0.005
SPLIT_TOLERANCE = 0.01


@dataclasses.dataclass(frozen=True)
class Plan:
    """One way to quantise: the weight MatMuls whose node names hold one of `kept` stay fp32."""

    name: str
    kept: tuple[str, ...] = ()


PLANS = (
    Plan("every weight int8"),
    Plan("feed-forward output projections fp32", ("/ff/w_2/",)),
    Plan("feed-forward fp32", ("/ff/w_1/", "/ff/w_2/")),
)


@dataclasses.dataclass(frozen=True)
class DevSplit:
    name: str
    texts: Sequence[str]
    labels: Sequence[int]


def kept_nodes(model_path: Path, plan: Plan) -> list[str]:
    """The names of the graph's MatMul and Gemm nodes `plan` leaves in fp32."""
    graph = onnx.load(str(model_path), load_external_data=False).graph
    return [
        n.name
        for n in graph.node
        if n.op_type in ("MatMul", "Gemm") and any(part in n.name for part in plan.kept)
    ]


def write(model_dir: Path, plan: Plan) -> list[str]:
    """model.int8.onnx by `plan`; returns the nodes it left in fp32."""
    kept = kept_nodes(model_dir / "model.onnx", plan) if plan.kept else []
    # per-channel weight scales: per-tensor scales cost the default model accuracy that per-channel
    # ones keep, at the same size (config.json records both variants' accuracy)
    quantize_dynamic(
        model_dir / "model.onnx",
        model_dir / INT8_FILE,
        weight_type=QuantType.QInt8,
        per_channel=True,
        nodes_to_exclude=kept,
    )
    return kept


def _sentences_per_second(model: OnnxClassifier, ids: Sequence[Sequence[int]]) -> float:
    """One sentence per run, one thread: the latency-bound case a server sees at low load."""
    feeds = []
    for seq in ids:
        input_ids, mask = pad([seq])
        feeds.append({"input_ids": input_ids, "attention_mask": mask})
    rounds = []
    for _ in range(3):
        started = time.perf_counter()
        for feed in feeds:
            model.session.run(["logits"], feed)
        rounds.append(len(feeds) / (time.perf_counter() - started))
    return statistics.median(rounds)


def _accuracy(model: OnnxClassifier, split: DevSplit) -> float:
    return Scores.from_predictions(split.labels, model.predict(split.texts), len(model.labels)).accuracy


def allowance(split: DevSplit) -> float:
    """What int8 may lose on `split` alone: SPLIT_TOLERANCE, or one text on a split too small to show it."""
    return max(SPLIT_TOLERANCE, 1 / max(1, len(split.texts)))


def excess(reference: dict[str, float], accuracy: dict[str, float], dev: Sequence[DevSplit]) -> float:
    """How far a plan's dev accuracy falls beyond what it may lose (pooled, and split by split);
    at most 0 when it is within both."""
    texts = sum(len(s.texts) for s in dev)
    if not texts:
        return -1.0
    pooled = sum((reference[s.name] - accuracy[s.name]) * len(s.texts) for s in dev) / texts
    worst = max(reference[s.name] - accuracy[s.name] - allowance(s) for s in dev)
    return max(pooled - TOLERANCE, worst)


def choose(
    model_dir: Path, dev: Sequence[DevSplit], plans: Sequence[Plan] = PLANS
) -> tuple[Plan, dict[str, float], list[dict[str, Any]]]:
    """Write model.int8.onnx by the first of `plans` within what it may lose against fp32 on dev
    (`excess`), or by the closest when none is; returns that plan, fp32's dev accuracy and each
    tried plan's."""
    fp32 = OnnxClassifier(model_dir, threads=2)
    reference = {split.name: _accuracy(fp32, split) for split in dev}
    tried: list[dict[str, Any]] = []
    for plan in plans:
        kept = write(model_dir, plan)
        int8 = OnnxClassifier(model_dir, INT8_FILE, threads=2)
        accuracy = {split.name: _accuracy(int8, split) for split in dev}
        beyond = excess(reference, accuracy, dev)
        tried.append({"plan": plan.name, "fp32_nodes": len(kept), "dev_accuracy": accuracy, "excess": beyond})
        if beyond <= 1e-9:
            return plan, reference, tried
    best = min(range(len(plans)), key=lambda i: tried[i]["excess"])
    if best != len(plans) - 1:
        write(model_dir, plans[best])
    return plans[best], reference, tried


def quantize(
    model_dir: Path, dev: Sequence[DevSplit], texts: Sequence[str], labels: Sequence[int]
) -> dict[str, Any]:
    """Write model.int8.onnx next to model.onnx by the plan `choose` keeps, and measure both graphs
    on the labelled test `texts`."""
    plan, dev_fp32, tried = choose(model_dir, dev)
    fp32 = OnnxClassifier(model_dir)
    int8 = OnnxClassifier(model_dir, INT8_FILE)
    n = len(fp32.labels)
    fp32_scores = Scores.from_predictions(labels, fp32.predict(texts), n)
    int8_scores = Scores.from_predictions(labels, int8.predict(texts), n)
    sample = encode(fp32.tokenizer, texts[:200])
    fp32_speed = _sentences_per_second(fp32, sample)
    int8_speed = _sentences_per_second(int8, sample)
    return {
        "file": INT8_FILE,
        "method": "onnxruntime.quantization.quantize_dynamic, QInt8 weights, per-channel scales",
        "plan": plan.name,
        "fp32_node_names_holding": list(plan.kept),
        "dev_accuracy_fp32": dev_fp32,
        "plans_tried": tried,
        "tolerance_on_dev": {"pooled": TOLERANCE, "each_split": SPLIT_TOLERANCE},
        "test_accuracy": int8_scores.accuracy,
        "test_accuracy_fp32": fp32_scores.accuracy,
        "test_macro_f1": int8_scores.macro_f1,
        "sentences_per_second_batch1_1thread": int8_speed,
        "sentences_per_second_batch1_1thread_fp32": fp32_speed,
        "speedup_vs_fp32": int8_speed / fp32_speed,
        "size_bytes": (model_dir / INT8_FILE).stat().st_size,
        "size_bytes_fp32": (model_dir / "model.onnx").stat().st_size,
    }


def compare(
    model_dir: Path,
    splits: Sequence[DevSplit],
    scratch: Path,
    plans: Sequence[Plan] = PLANS,
    threads: int = 2,
) -> dict[str, dict[str, float]]:
    """Accuracy on each of `splits` of fp32 and of each plan's graph, {graph: {split: accuracy}}; the
    graphs are written in `scratch`, the version is left as it is."""
    for name in ("model.onnx", "config.json", "tokenizer.json"):
        target = scratch / name
        if not target.exists():
            target.symlink_to((model_dir / name).resolve())
    table = {"fp32": {s.name: _accuracy(OnnxClassifier(scratch, threads=threads), s) for s in splits}}
    for plan in plans:
        write(scratch, plan)
        int8 = OnnxClassifier(scratch, INT8_FILE, threads=threads)
        table[plan.name] = {s.name: _accuracy(int8, s) for s in splits}
    return table
