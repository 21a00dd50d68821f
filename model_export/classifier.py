"""An exported model directory as a classifier: its tokenizer and an ONNX Runtime session."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from model_contract import length_batches, pad, session_options
from model_export.tokenizer import encode, load_tokenizer


def session(model_path: Path, threads: int = 1) -> ort.InferenceSession:
    """A CPU session with the server's options."""
    return ort.InferenceSession(str(model_path), session_options(threads), providers=["CPUExecutionProvider"])


class OnnxClassifier:
    """Tokenizer + ONNX session of one model directory."""

    def __init__(self, model_dir: Path, model_file: str = "model.onnx", threads: int = 1) -> None:
        self.config = json.loads((model_dir / "config.json").read_text())
        self.labels: list[str] = self.config["labels"]
        self.tokenizer = load_tokenizer(model_dir / "tokenizer.json", self.config["max_length"])
        self.session = session(model_dir / model_file, threads)

    def logits_of_ids(self, ids: Sequence[Sequence[int]], batch_size: int = 64) -> NDArray[np.float32]:
        """Logits in input order; batches sorted by length so little is padding."""
        out = np.zeros((len(ids), len(self.labels)), dtype=np.float32)
        for members in length_batches([len(s) for s in ids], batch_size):
            input_ids, mask = pad([ids[i] for i in members])
            (logits,) = self.session.run(["logits"], {"input_ids": input_ids, "attention_mask": mask})
            out[members] = logits
        return out

    def predict(self, texts: Sequence[str]) -> list[int]:
        return [int(i) for i in self.logits_of_ids(encode(self.tokenizer, texts)).argmax(-1)]
