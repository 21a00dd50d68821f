"""The peer's runtime: an MLServer custom runtime that serves the same model.onnx and tokenizer.json.

It runs inside MLServer's own virtual environment (see bench/peer.py), never in the project's.
What a user of MLServer would write: tokenize, pad the batch to its longest text, one ONNX Runtime
session with the project's session options (every core, no spin-waiting), softmax, label. MLServer's
adaptive batching (when on) merges concurrent requests along the first dimension before predict().
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, StringCodec
from mlserver.types import InferenceRequest, InferenceResponse
from tokenizers import Tokenizer

from model_contract import pad, session_options


class OnnxSentiment(MLModel):
    async def load(self) -> bool:
        version_dir = Path(str(self.settings.parameters.uri))
        config = json.loads((version_dir / "config.json").read_text())
        self.labels = config["labels"]
        self.tokenizer = Tokenizer.from_file(str(version_dir / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(config["max_length"])
        extra = self.settings.parameters.extra or {}
        threads, model_file = int(extra.get("threads", 2)), str(extra.get("model_file", "model.onnx"))
        self.session = ort.InferenceSession(
            str(version_dir / model_file), session_options(threads), providers=["CPUExecutionProvider"]
        )
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        texts = StringCodec.decode_input(payload.inputs[0])
        ids, mask = pad([e.ids for e in self.tokenizer.encode_batch(texts)])
        (logits,) = self.session.run(["logits"], {"input_ids": ids, "attention_mask": mask})
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)
        labels = [self.labels[i] for i in probabilities.argmax(axis=1)]
        return InferenceResponse(
            model_name=self.name,
            outputs=[
                StringCodec.encode_output("label", labels),
                NumpyCodec.encode_output("probabilities", probabilities),
            ],
        )
