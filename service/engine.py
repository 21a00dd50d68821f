"""The core both APIs call: validate and tokenize, batch, run, turn logits into predictions."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

from service.attention import cls_attention, rollout
from service.batcher import Batcher, BatchLimits, BatchObserver, ItemResult, RunFn
from service.config import Settings, Variant
from service.errors import ModelNotFound, NotServing
from service.model_store import ModelSpec, load_spec
from service.preprocess import Preprocessor
from service.runtime import OnnxModel

log = logging.getLogger(__name__)

ONNX_FILES = {Variant.FP32: "model.onnx", Variant.INT8: "model.int8.onnx"}


class AttentionMode(StrEnum):
    NONE = "none"
    SUMMARY = "summary"  # tokens, [CLS] attention of the last layer, rollout
    FULL = "full"  # the summary and every layer's and head's weights


@dataclass(frozen=True)
class AttentionView:
    tokens: list[str]
    cls_attention: NDArray[np.float32]
    rollout: NDArray[np.float32]
    weights: NDArray[np.float32] | None  # (layers, heads, T, T) in FULL mode


@dataclass(frozen=True)
class TextResult:
    label: str
    score: float
    probabilities: NDArray[np.float32]
    truncated: bool
    num_tokens: int
    served: ItemResult
    attention: AttentionView | None


def softmax(logits: NDArray[np.float32]) -> NDArray[np.float32]:
    """Row-wise softmax of (B, labels) logits."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    result: NDArray[np.float32] = (shifted / shifted.sum(axis=-1, keepdims=True)).astype(np.float32)
    return result


def probabilities_of(model: OnnxModel) -> RunFn:
    """The model's run, with logits turned into probabilities in the worker thread, per batch."""

    def run(
        input_ids: NDArray[np.int64], attention_mask: NDArray[np.int64], with_attention: bool
    ) -> tuple[NDArray[np.float32], NDArray[np.float32] | None]:
        logits, attentions = model.run(input_ids, attention_mask, with_attention)
        return softmax(logits), attentions

    return run


class Engine:
    """One loaded model version behind its batcher."""

    def __init__(
        self,
        spec: ModelSpec,
        model: OnnxModel,
        preprocessor: Preprocessor,
        batcher: Batcher,
    ) -> None:
        self.spec = spec
        self.model = model
        self.preprocessor = preprocessor
        self.batcher = batcher
        self.ready = False

    @classmethod
    def load(cls, settings: Settings, observer: BatchObserver | None = None) -> Engine:
        """Check and load the model directory; raises ModelDirectoryError with one clear message."""
        spec = load_spec(
            settings.model_dir, settings.model_name, settings.model_version, ONNX_FILES[settings.variant]
        )
        model = OnnxModel(spec.onnx_path, settings.provider.value, settings.intra_op_threads)
        preprocessor = Preprocessor(
            spec.path / "tokenizer.json",
            spec.max_length,
            settings.max_texts_per_request,
            settings.max_text_chars,
        )
        limits = BatchLimits(
            max_batch_size=settings.max_batch_size,
            max_batch_tokens=max(settings.max_batch_tokens, spec.max_length),
            max_queue_delay_s=settings.max_queue_delay_ms / 1000,
            max_queue_size=settings.max_queue_size,
            max_concurrent_batches=settings.max_concurrent_batches,
            max_padding_ratio=settings.max_padding_ratio,
        )
        return cls(
            spec,
            model,
            preprocessor,
            Batcher(probabilities_of(model), limits, observer),
        )

    async def start(self) -> None:
        """Warm the runtime up in a worker thread, then start batching."""
        await asyncio.to_thread(self.model.warm_up, self.spec.max_length, self.batcher.limits.max_batch_size)
        self.batcher.start()
        self.ready = True

    async def stop(self) -> None:
        """Answer everything queued, then stop."""
        self.ready = False
        await self.batcher.stop()

    def check_version(self, version: int) -> None:
        """0 means the served version; any other must be the one loaded."""
        if version and version != self.spec.version:
            where = "is not loaded" if version in self.spec.available_versions else "does not exist"
            raise ModelNotFound(
                f"model {self.spec.name!r} version {version} {where}; this server serves version "
                f"{self.spec.version}"
            )

    async def predict(
        self, texts: Sequence[str], mode: AttentionMode, deadline: float | None
    ) -> list[TextResult]:
        """Predictions in the order of `texts`."""
        if not self.ready:
            raise NotServing("the server is starting up or shutting down; retry (another replica)")
        encoded = self.preprocessor.encode(texts)
        with_attention = mode is not AttentionMode.NONE
        futures = self.batcher.submit([e.ids for e in encoded], with_attention, deadline)
        served = [await futures[0]] if len(futures) == 1 else await asyncio.gather(*futures)
        results = []
        for enc, item in zip(encoded, served, strict=True):
            probabilities = item.outputs
            best = int(probabilities.argmax())
            view = None
            if with_attention and item.attentions is not None:
                view = AttentionView(
                    enc.tokens,
                    cls_attention(item.attentions),
                    rollout(item.attentions),
                    item.attentions if mode is AttentionMode.FULL else None,
                )
            results.append(
                TextResult(
                    self.spec.labels[best],
                    float(probabilities[best]),
                    probabilities,
                    enc.truncated,
                    len(enc.ids),
                    item,
                    view,
                )
            )
        return results
