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
from service.cpus import available_cpus
from service.errors import InvalidInput, ModelNotFound, NotServing
from service.model_store import ModelSpec, load_spec
from service.preprocess import Encoded, Preprocessor
from service.runtime import OnnxModel

log = logging.getLogger(__name__)

ONNX_FILES = {Variant.FP32: "model.onnx", Variant.INT8: "model.int8.onnx"}
INLINE_CHARS = 4096  # requests up to this many characters are tokenized on the event loop (< 1 ms)


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
class RowResult:
    """What the worker thread makes of one text's row: probabilities, and attention when asked."""

    probabilities: NDArray[np.float32]
    cls_attention: NDArray[np.float32] | None = None
    rollout: NDArray[np.float32] | None = None
    weights: NDArray[np.float32] | None = None  # its own small array, cropped: never a view of the batch


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


def rows_of(model: OnnxModel) -> RunFn:
    """The batch's run in the worker thread: the model, softmax, and per row only the attention that
    row's caller asked for, cropped to its real tokens (a caller who has gone gets none)."""

    def run(
        input_ids: NDArray[np.int64],
        attention_mask: NDArray[np.int64],
        modes: Sequence[AttentionMode | None],
        wide: bool,
    ) -> list[RowResult]:
        with_attention = any(m in (AttentionMode.SUMMARY, AttentionMode.FULL) for m in modes)
        logits, attentions = model.run(input_ids, attention_mask, with_attention, wide)
        probabilities = softmax(logits)
        lengths = attention_mask.sum(axis=1)
        rows = []
        for row, mode in enumerate(modes):
            if attentions is None or mode is None or mode is AttentionMode.NONE:
                rows.append(RowResult(probabilities[row]))
                continue
            n = int(lengths[row])
            weights = attentions[row, :, :, :n, :n]
            rows.append(
                RowResult(
                    probabilities[row],
                    cls_attention(weights),
                    rollout(weights),
                    np.array(weights, dtype=np.float32) if mode is AttentionMode.FULL else None,
                )
            )
        return rows

    return run


def _text_bytes(width: int, mode: AttentionMode, layers: int, heads: int) -> int:
    """An upper estimate of one text's share of the answer, its attention `width` tokens wide."""
    size = 64  # label, score, probabilities, batch figures
    if mode is not AttentionMode.NONE:
        size += width * (2 * 5 + 24)  # two floats and a token string (up to ~20 bytes) each
    if mode is AttentionMode.FULL:
        size += layers * heads * width * width * 4 + 16
    return size


def response_sizes(
    num_tokens: Sequence[int], mode: AttentionMode, layers: int, heads: int, padded: bool
) -> list[int]:
    """Upper estimates of the answer's size to the first 1, 2, ... texts, in one pass: attention
    grows with tokens squared under FULL. padded: every text's attention is as wide as the longest
    one's (KServe's tensors), so a longer text widens the ones before it too."""
    sizes, total, widest = [], 0, 0
    for count, tokens in enumerate(num_tokens, start=1):
        widest = max(widest, tokens)
        if padded:
            sizes.append(count * _text_bytes(widest, mode, layers, heads))
        else:
            total += _text_bytes(tokens, mode, layers, heads)
            sizes.append(total)
    return sizes


def response_bytes(
    num_tokens: Sequence[int], mode: AttentionMode, layers: int, heads: int, padded: bool
) -> int:
    """An upper estimate of the answer's size to all of `num_tokens`."""
    return response_sizes(num_tokens, mode, layers, heads, padded)[-1]


def batch_limits(
    settings: Settings, max_length: int, concurrent_batches: int, wide_when_alone: bool
) -> BatchLimits:
    """The batcher's limits from the settings; a text of max_length tokens always fits a batch."""
    return BatchLimits(
        max_batch_size=settings.max_batch_size,
        max_batch_tokens=max(settings.max_batch_tokens, max_length),
        max_queue_delay_s=settings.max_queue_delay_ms / 1000,
        max_queue_size=settings.max_queue_size,
        max_concurrent_batches=concurrent_batches,
        max_padding_ratio=settings.max_padding_ratio,
        wide_when_alone=wide_when_alone,
    )


@dataclass(frozen=True)
class Sizing:
    """How the server uses the machine, as chosen at start (flags, or sized from the CPUs)."""

    workers: int
    max_concurrent_batches: int
    intra_op_threads: int
    lone_batch_threads: int
    available_cpus: int


class Engine:
    """One loaded model version behind its batcher."""

    def __init__(
        self,
        spec: ModelSpec,
        model: OnnxModel,
        preprocessor: Preprocessor,
        batcher: Batcher,
        max_message_bytes: int,
        sizing: Sizing,
    ) -> None:
        self.spec = spec
        self.model = model
        self.preprocessor = preprocessor
        self.batcher = batcher
        self.max_message_bytes = max_message_bytes
        self.sizing = sizing
        self.ready = False
        self.draining = asyncio.Event()  # set once new work is refused: open streams close

    @classmethod
    def load(cls, settings: Settings, observer: BatchObserver | None = None) -> Engine:
        """Check and load the model directory; raises ModelDirectoryError with one clear message."""
        spec = load_spec(
            settings.model_dir, settings.model_name, settings.model_version, ONNX_FILES[settings.variant]
        )
        cpus = available_cpus()
        lone_threads = settings.lone_batch_threads or cpus
        model = OnnxModel(
            spec.onnx_path,
            settings.provider.value,
            settings.intra_op_threads,
            lone_threads,
            lone_spin=settings.lone_batch_spin,
        )
        sizing = Sizing(
            workers=settings.worker_of or settings.workers,
            max_concurrent_batches=settings.max_concurrent_batches or max(2, cpus),
            intra_op_threads=settings.intra_op_threads,
            # without a second session (one thread asked for, or a GPU) a lone batch runs like any other
            lone_batch_threads=lone_threads if model.lone_session is not None else settings.intra_op_threads,
            available_cpus=cpus,
        )
        log.info(
            "%d CPUs available to this process (of %d workers): %d batches at once, %d ONNX Runtime "
            "threads per batch beside others, %d for a batch alone (%s)",
            sizing.available_cpus,
            sizing.workers,
            sizing.max_concurrent_batches,
            sizing.intra_op_threads,
            sizing.lone_batch_threads,
            model.provider,
        )
        preprocessor = Preprocessor(
            spec.path / "tokenizer.json",
            spec.max_length,
            settings.max_texts_per_request,
            settings.max_text_chars,
        )
        limits = batch_limits(
            settings, spec.max_length, sizing.max_concurrent_batches, model.lone_session is not None
        )
        return cls(
            spec,
            model,
            preprocessor,
            Batcher(rows_of(model), limits, observer),
            settings.max_message_bytes,
            sizing,
        )

    async def start(self) -> None:
        """Warm the runtime up in a worker thread, then start batching."""
        await asyncio.to_thread(self.model.warm_up, self.spec.max_length, self.batcher.limits.max_batch_size)
        self.batcher.start()
        self.ready = True

    @property
    def provider(self) -> str:
        """The ONNX Runtime execution provider running the model."""
        return self.model.provider

    @property
    def max_texts(self) -> int:
        """Most texts in one request."""
        return self.preprocessor.max_texts

    @property
    def max_chars(self) -> int:
        """Most characters in one text."""
        return self.preprocessor.max_chars

    def check_count(self, count: int) -> None:
        """Refuse a request of `count` texts before reading them (InvalidInput)."""
        self.preprocessor.check_count(count)

    def stop_accepting(self) -> None:
        """Refuse new work from now on (UNAVAILABLE); what was accepted is still answered."""
        self.ready = False
        self.draining.set()

    async def stop(self) -> None:
        """Answer everything queued, then stop."""
        self.stop_accepting()
        await self.batcher.stop()

    def check_version(self, version: int) -> None:
        """0 means the served version; any other must be the one loaded."""
        if version and version != self.spec.version:
            where = "is not loaded" if version in self.spec.available_versions else "does not exist"
            raise ModelNotFound(
                f"model {self.spec.name!r} version {version} {where}; this server serves version "
                f"{self.spec.version}"
            )

    def check_response_size(self, num_tokens: Sequence[int], mode: AttentionMode, padded: bool) -> None:
        """Refuse, before any work, an answer that could never be sent within the message limit."""
        spec, limit = self.spec, self.max_message_bytes
        sizes = response_sizes(num_tokens, mode, spec.num_layers, spec.num_heads, padded)
        size = sizes[-1]
        if size <= limit:
            return
        fitting = sum(1 for prefix in sizes if prefix <= limit)  # the sizes only grow
        advice = f"send at most {fitting} such texts per request, or" if fitting else "send shorter texts, or"
        raise InvalidInput(
            f"the answer to these {len(num_tokens)} texts with attention={mode.value} would take about "
            f"{size / 2**20:.1f} MiB ({spec.num_layers} layers x {spec.num_heads} heads x tokens² floats "
            f"per text); the message limit is {limit / 2**20:.1f} MiB: {advice} ask for attention=summary"
        )

    def check_sent_size(self, size: int) -> None:
        """The last guard before sending: an answer over the message limit would reach the caller as
        a transport error; say what happened instead (check_response_size should have caught it)."""
        if size > self.max_message_bytes:
            raise InvalidInput(
                f"the answer takes {size / 2**20:.1f} MiB; the message limit is "
                f"{self.max_message_bytes / 2**20:.1f} MiB: send fewer texts per request"
            )

    async def encode(self, texts: Sequence[str]) -> list[Encoded]:
        """Tokenize; a large request in a worker thread, so that other callers keep being served."""
        if sum(map(len, texts)) <= INLINE_CHARS:
            return self.preprocessor.encode(texts)
        return await asyncio.to_thread(self.preprocessor.encode, texts)

    async def predict(
        self, texts: Sequence[str], mode: AttentionMode, deadline: float | None, padded: bool = False
    ) -> list[TextResult]:
        """Predictions in the order of `texts`. padded: the answer pads attention to the longest
        text (KServe tensors), which the size check must count."""
        if not self.ready:
            raise NotServing("the server is starting up or shutting down; retry (another replica)")
        if len(texts) <= self.batcher.limits.max_queue_size:
            self.batcher.check_room(len(texts))  # refuse an overload before paying for tokenizing
        encoded = await self.encode(texts)
        self.check_response_size([len(e.ids) for e in encoded], mode, padded)
        futures = self.batcher.submit([e.ids for e in encoded], mode, deadline)
        served = [await futures[0]] if len(futures) == 1 else await asyncio.gather(*futures)
        results = []
        for enc, item in zip(encoded, served, strict=True):
            row: RowResult = item.value
            probabilities = row.probabilities
            best = int(probabilities.argmax())
            view = None
            if row.cls_attention is not None and row.rollout is not None:
                view = AttentionView(enc.tokens, row.cls_attention, row.rollout, row.weights)
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
