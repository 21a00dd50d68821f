"""Building an engine from the settings: the model directory, the sessions, CPU sizing, batch limits."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from service.core.answer_size import AnswerSizePolicy
from service.core.batcher import Batcher, BatchObserver
from service.core.cache import AnswerCache, CacheObserver
from service.core.engine import Engine
from service.core.errors import ModelDirectoryError
from service.core.fair_queue import BatchLimits
from service.core.postprocess import make_run_fn
from service.core.preprocess import Preprocessor
from service.core.runtime import OnnxModel
from service.core.spec import Sizing
from service.ops.cpus import available_cpus
from service.ops.settings import LongTexts
from service.ops.tracing import BatchTracing, Tracing
from service.versions.store import load_spec

if TYPE_CHECKING:
    from service.core.results import PredictionObserver
    from service.ops.settings import Settings

log = logging.getLogger(__name__)


class EngineObserver(BatchObserver, CacheObserver, Protocol):
    """What watches one version's engine for the metrics: its batches and its cache."""


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
        priority_aging_s=settings.priority_aging_s,
    )


def build_engine(
    settings: Settings,
    observer: EngineObserver | None = None,
    predictions: PredictionObserver | None = None,
    tracing: Tracing | None = None,
    version: int | None = None,
) -> Engine:
    """Check and load one version of the model directory (`version`, else --model-version, else the
    highest); raises ModelDirectoryError with one clear message. `observer` watches the batches,
    `predictions` the answers; `tracing` when tracing is on."""
    chosen = settings.model_version if version is None else version
    spec = load_spec(
        settings.model_dir, settings.model_name, chosen, settings.variant, settings.provider.value
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
    wide = model.lone_session is not None
    sizing = Sizing(
        workers=settings.worker_of or settings.workers,
        max_concurrent_batches=settings.max_concurrent_batches or max(2, cpus),
        intra_op_threads=settings.intra_op_threads,
        # without a second session (one thread asked for, or a GPU) a lone batch runs like any other
        lone_batch_threads=lone_threads if wide else settings.intra_op_threads,
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
    tokenizer = spec.path / "tokenizer.json"
    try:
        preprocessor = Preprocessor(
            tokenizer, spec.max_length, settings.max_texts_per_request, settings.max_text_chars
        )
    except Exception as err:  # the tokenizers library raises its own untyped errors for a bad file
        raise ModelDirectoryError(f"{tokenizer} could not be read by the tokenizer: {err}") from err
    limits = batch_limits(settings, spec.max_length, sizing.max_concurrent_batches, wide)
    batch_tracing = None
    if tracing is not None:
        model_attributes = {
            "model.name": spec.name,
            "model.version": spec.version,
            "model.variant": spec.variant,
            "model.provider": model.provider,
        }
        batch_tracing = BatchTracing(tracing, model_attributes)
    return Engine(
        spec,
        model,
        preprocessor,
        Batcher(make_run_fn(model), limits, observer, batch_tracing, once=settings.cache_entries > 0),
        AnswerSizePolicy(settings.max_message_bytes, spec.num_layers, spec.num_heads),
        sizing,
        predictions,
        tracing,
        AnswerCache(settings.cache_entries, observer) if settings.cache_entries else None,
        read_whole=settings.long_texts is LongTexts.WINDOWS,
        explained_words=settings.max_explained_words,
    )
