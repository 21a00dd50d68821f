"""The request path both APIs call: check the version, admit, tokenize, batch, and turn each row
into a prediction."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from model_contract import padding_runs
from service.core.cache import runs_once
from service.core.errors import InvalidInput, NotServing, VersionRefused
from service.core.explain import Method, Plan, plan
from service.core.fair_queue import ItemResult, Priority
from service.core.results import AttentionMode, PredictionObserver, TextResult, softmax, text_result
from service.core.rides import ride
from service.core.spec import EngineInfo, ModelSpec, Sizing

if TYPE_CHECKING:
    from service.core.answer_size import AnswerSizePolicy
    from service.core.batcher import Batcher
    from service.core.cache import Answer, AnswerCache
    from service.core.preprocess import Encoded, Preprocessor, Windows
    from service.core.runtime import OnnxModel


class CallTracer(Protocol):
    """What the engine asks of tracing (ops/tracing.py's Tracing): a span per step of a sampled
    call, the current call's span, and its queue and model spans once its texts were served."""

    def step(self, name: str) -> AbstractContextManager[Any]: ...

    def current(self) -> Any: ...

    def served(self, enqueued: float, rides: Sequence[Any]) -> None: ...


# requests up to this many characters are tokenized on the event loop: cheaper than a thread hop
INLINE_CHARS = 4096


class Engine:
    """One loaded model version behind its batcher (assembly.build_engine makes one from settings)."""

    def __init__(
        self,
        spec: ModelSpec,
        model: OnnxModel,
        preprocessor: Preprocessor,
        batcher: Batcher,
        answer_size: AnswerSizePolicy,
        sizing: Sizing,
        observer: PredictionObserver | None = None,
        tracing: CallTracer | None = None,
        cache: AnswerCache | None = None,
        read_whole: bool = False,
        explained_words: int = 0,
    ) -> None:
        self.spec = spec
        self.model = model
        self.preprocessor = preprocessor
        self.batcher = batcher
        self.answer_size = answer_size
        self.observer = observer
        self.tracing = tracing
        self.cache = cache
        self.read_whole = read_whole  # whether a long text is read in windows unless a call says
        self.explained_words = (
            explained_words  # most words a request may have explained (--max-explained-words)
        )
        self._info = EngineInfo(
            spec, model.provider, preprocessor.max_texts, preprocessor.max_chars, sizing, explained_words
        )

    def info(self) -> EngineInfo:
        return self._info

    def warm_up(self) -> None:
        """Run the shapes calls will bring once, so that the first callers do not pay for allocation."""
        self.model.warm_up(self.spec.max_length, self.batcher.limits.max_batch_size)

    async def start(self, warm: bool = True) -> None:
        """Warm the runtime up in a worker thread (unless it was: warm=False), then start batching."""
        if warm:
            await asyncio.to_thread(self.warm_up)
        self.batcher.start()

    @property
    def accepting(self) -> bool:
        """Whether new work may enter: started, and not stopping (the one flag: the batcher's)."""
        return self.batcher.accepting

    def stop_accepting(self) -> None:
        """Refuse new work from now on (UNAVAILABLE); what was accepted is still answered."""
        self.batcher.close()

    async def stop(self) -> None:
        """Answer everything queued, then stop."""
        self.stop_accepting()
        await self.batcher.stop()

    @property
    def idle(self) -> bool:
        """No round running and no text waiting: a moment work off the callers' path may take."""
        return self.batcher.idle

    def observe(self, observer: PredictionObserver | None) -> None:
        """Whom the engine tells of its answers from now on (None: nobody, as for a shadow)."""
        self.observer = observer

    def vet(self, texts: Sequence[str], tolerance: float) -> None:
        """VersionRefused unless the graph is what the model's config claims (its attention as many
        layers and heads deep; its vocabulary as large as the tokenizer's and the config's: metadata,
        the answer-size policy and the tokenizer's ids trust these figures) and it gives `texts` the
        same probabilities (within `tolerance`) alone and padded in one batch, probabilities that are
        finite and sum to 1."""
        spec = self.spec
        vocab = self.preprocessor.tokenizer.get_vocab_size()
        if vocab != spec.vocab_size:
            raise VersionRefused(
                f"config.json claims a vocabulary of {spec.vocab_size}; tokenizer.json holds {vocab}"
            )
        ids = np.array([[1, spec.vocab_size - 1, 1]], dtype=np.int64)
        try:
            _, attentions = self.model.run(ids, np.ones_like(ids), with_attention=True)
        except Exception as err:  # ONNX Runtime's own error: an id past the graph's embedding table
            raise VersionRefused(
                f"the graph cannot read token id {spec.vocab_size - 1} of the claimed vocabulary of "
                f"{spec.vocab_size}: {str(err)[:200]}"
            ) from None
        assert attentions is not None
        depth = tuple(attentions.shape[1:3])
        if depth != (spec.num_layers, spec.num_heads):
            raise VersionRefused(
                f"config.json claims {spec.num_layers} layers x {spec.num_heads} heads; the graph's "
                f"attention has {depth[0]} x {depth[1]}"
            )
        sequences = [e.ids for e in self.preprocessor.encode(list(texts))]
        together, alone = padding_runs(functools.partial(self.model.run, with_attention=False), sequences)
        probabilities = softmax(together[0])
        for row, (logits, _) in enumerate(alone):
            one = softmax(logits[np.newaxis])[0]
            if not np.all(np.isfinite(one)) or abs(float(one.sum()) - 1) > 1e-3:
                raise VersionRefused(f"its outputs for a parity text are not probabilities: {one.tolist()}")
            gap = float(np.abs(one - probabilities[row]).max())
            if gap > tolerance:
                raise VersionRefused(
                    f"a text padded in a batch gets probabilities {gap:.4f} away from the same text alone "
                    f"(at most {tolerance} allowed): the graph does not honour the padding mask"
                )

    def step(self, name: str) -> AbstractContextManager[Any]:
        """A span for one step of the current call when it is traced (service/ops/tracing), else
        nothing; `as` gives the span or None."""
        return nullcontext() if self.tracing is None else self.tracing.step(name)

    def admit(self, count: int, priority: Priority = Priority.NORMAL) -> None:
        """The one admission gate, before a request's texts are read or tokenized: NotServing unless
        the engine accepts work, InvalidInput for more texts than a request may hold, QueueFull (or
        InvalidInput) when the queue has no room for them. The answer's size is checked once the
        texts are tokenized (predict)."""
        if not self.accepting:
            raise NotServing("the server is starting up or shutting down; retry (another replica)")
        self.preprocessor.check_count(count)
        self.batcher.admit(count, priority)

    def check_sent_size(self, size: int) -> None:
        """Refuse an answer of `size` bytes that the transport could not send (AnswerSizePolicy)."""
        self.answer_size.check_sent(size)

    async def encode(self, texts: Sequence[str], positions: Sequence[int] | None = None) -> list[Encoded]:
        """Tokenize; a large request in a worker thread, so that other callers keep being served."""
        encode = (
            self.preprocessor.encode
            if positions is None
            else functools.partial(self.preprocessor.encode, positions=positions)
        )
        if sum(map(len, texts)) <= INLINE_CHARS:
            return encode(texts)
        return await asyncio.to_thread(encode, texts)

    async def _cut(
        self, texts: Sequence[str], encoded: Sequence[Encoded], mode: AttentionMode
    ) -> dict[int, Windows]:
        """The windows of each text the model would cut, by its place; a large request's in a worker
        thread. Full attention is not given for a text read in windows (its summary is)."""
        long = [index for index, each in enumerate(encoded) if each.truncated]
        if long and mode is AttentionMode.FULL:
            raise InvalidInput(
                f"text {long[0]} is longer than the model reads at once and is to be read whole, in "
                "windows: full attention is not given for such a text; ask for the summary, or let it be cut"
            )

        def cut_all() -> dict[int, Windows]:
            return {index: self.preprocessor.windows(texts[index]) for index in long}

        return (
            await asyncio.to_thread(cut_all) if sum(len(texts[i]) for i in long) > INLINE_CHARS else cut_all()
        )

    async def _plans(
        self, texts: Sequence[str], encoded: Sequence[Encoded], explain: Method, cut: bool, priority: Priority
    ) -> dict[int, Plan]:
        """What to run to explain each text (nothing unless asked): InvalidInput beyond the words a
        request may have explained or for a text read whole; admitted as the work it is (QueueFull
        when the queue has no room for the variants)."""
        if explain is Method.NONE:
            return {}
        if cut:
            raise InvalidInput(
                "a text longer than the model reads at once cannot be explained when read whole, in "
                "windows; let it be cut (long_texts TRUNCATE) to explain the words the model reads"
            )
        words = (  # a large request's words in a worker thread, as its tokens
            self.preprocessor.words(texts)
            if sum(map(len, texts)) <= INLINE_CHARS
            else await asyncio.to_thread(self.preprocessor.words, texts)
        )
        count = sum(map(len, words))
        if count > self.explained_words:
            raise InvalidInput(
                f"the request asks to explain {count} words; the limit is {self.explained_words} per "
                "request (each word costs about a model pass): send fewer or shorter texts"
            )
        plans = {i: plan(e.ids, w, explain) for i, (e, w) in enumerate(zip(encoded, words, strict=True))}
        passes, room = sum(len(p.sequences) for p in plans.values()), self.batcher.limits.max_queue_size
        if passes > room:
            raise InvalidInput(
                f"explaining these {count} words takes {passes} model passes and the queue holds at most "
                f"{room}: explain fewer words per request"
            )
        self.batcher.admit(passes, priority)
        return plans

    async def predict(
        self,
        texts: Sequence[str],
        mode: AttentionMode,
        deadline: float | None,
        padded: bool = False,
        json: bool = False,
        priority: Priority = Priority.NORMAL,
        whole: bool | None = None,
        explain: Method = Method.NONE,
    ) -> list[TextResult]:
        """Predictions in the order of `texts`. padded: the answer pads attention to the longest
        text (KServe tensors); json: it is sent as JSON; the size check counts both. With the
        answer cache on, a text the cache holds is answered from it (its batch figures are 0: it
        rode in no batch), and a text the request holds twice runs once. priority: how soon its
        texts want their turn (fair_queue.py). whole: a text longer than the model's window is
        read in overlapping windows (core/windows.py) instead of cut (None: as the server does).
        explain: each text's words' contributions (core/explain.py), measured with variants of the
        text that ride in the batches as its request's texts; such a request bypasses the cache."""
        self.admit(len(texts), priority)  # refuse before paying for tokenizing
        whole = self.read_whole if whole is None else whole
        texts = list(texts)
        cache = self.cache
        kept: list[Answer | None]
        if cache is None or explain is not Method.NONE:  # every text runs, in order
            kept = [None] * len(texts)
            run_of = to_run = list(range(len(texts)))
        else:
            kept = cache.get(texts, mode)
            if whole:  # a cut text's answer is not the answer to reading it whole
                kept = [None if answer is None or answer.encoded.truncated else answer for answer in kept]
            run_of, to_run = runs_once(texts, kept)
        with self.step("tokenize") as span:
            every = len(to_run) == len(texts)  # then the texts run are the request's, in order
            run_texts = texts if every else [texts[position] for position in to_run]
            ran_encoded = await self.encode(run_texts, None if every else to_run) if to_run else []
            cuts = await self._cut(run_texts, ran_encoded, mode) if whole else {}
            for index, windows in cuts.items():
                ran_encoded[index] = windows.whole
            encoded = [
                ran_encoded[index] if answer is None else answer.encoded
                for index, answer in zip(run_of, kept, strict=True)
            ]
            lengths = [len(e.ids) for e in encoded]
            if span is not None:
                truncated = sum(e.truncated for e in encoded)
                span.set_attributes(
                    {"call.texts": len(texts), "call.tokens": sum(lengths), "call.truncated": truncated}
                )
        self.answer_size.check_request(lengths, mode, padded, json)
        plans = await self._plans(run_texts, ran_encoded, explain, bool(cuts), priority)
        # each window or variant rides as a text of its own (core/rides.py)
        ran, explanations = await ride(
            self.batcher, self.tracing, ran_encoded, cuts, plans, mode, deadline, priority
        )
        if cache is not None and not plans:
            for index, position in enumerate(to_run):
                if index not in cuts:
                    cache.put(texts[position], mode, ran_encoded[index], ran[index].value)
        served = [
            ran[index] if answer is None else ItemResult(answer.row, 0.0, 0.0, 0, 0)
            for index, answer in zip(run_of, kept, strict=True)
        ]
        labels = self.spec.labels
        results = [text_result(labels, enc, item) for enc, item in zip(encoded, served, strict=True)]
        for position, index in enumerate(run_of):  # a kept answer's index is -1: never cut
            if index in cuts:
                results[position] = dataclasses.replace(results[position], windows=len(cuts[index].parts))
            if index in explanations:
                results[position] = dataclasses.replace(results[position], explanation=explanations[index])
        if self.observer is not None:
            self.observer.predicted(texts, results, self.spec.version)
        return results
