"""An int8 dynamically quantised variant, with its accuracy and speed against fp32."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from onnxruntime.quantization import QuantType, quantize_dynamic

from model_contract import pad
from model_export.classifier import OnnxClassifier
from model_export.scoring import Scores
from model_export.tokenizer import encode

INT8_FILE = "model.int8.onnx"


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


def quantize(model_dir: Path, texts: Sequence[str], labels: Sequence[int]) -> dict[str, Any]:
    """Write model.int8.onnx next to model.onnx and measure both on the labelled `texts`."""
    # per-channel weight scales: per-tensor scales cost the default model accuracy that per-channel
    # ones keep, at the same size (config.json records both variants' accuracy)
    quantize_dynamic(
        model_dir / "model.onnx", model_dir / INT8_FILE, weight_type=QuantType.QInt8, per_channel=True
    )
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
        "test_accuracy": int8_scores.accuracy,
        "test_accuracy_fp32": fp32_scores.accuracy,
        "test_macro_f1": int8_scores.macro_f1,
        "sentences_per_second_batch1_1thread": int8_speed,
        "sentences_per_second_batch1_1thread_fp32": fp32_speed,
        "speedup_vs_fp32": int8_speed / fp32_speed,
        "size_bytes": (model_dir / INT8_FILE).stat().st_size,
        "size_bytes_fp32": (model_dir / "model.onnx").stat().st_size,
    }
