"""What the classify APIs other servers speak mean, for the HTTP door: texts in, each text's label,
probabilities and logits out, with the tokens counted (vLLM's and Infinity's /classify, text-
embeddings-inference's /predict), and a text's tokens as the tokenizer cuts them (/tokenize). The
door shapes the answers; the texts run through the versions as every other call's do."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.core.fair_queue import Priority
from service.core.results import AttentionMode, TextResult

if TYPE_CHECKING:
    from service.core.preprocess import Piece
    from service.core.spec import EngineInfo
    from service.versions.registry import ModelRegistry

INLINE_TOKENIZE_CHARS = 20_000  # more is tokenized in a worker thread, off the event loop


@dataclass(frozen=True)
class Classified:
    """The answer to one request: each text's result, in order, and the version that made them."""

    name: str
    version: int
    labels: list[str]
    results: list[TextResult]

    @property
    def tokens(self) -> int:
        """The tokens the model read ([CLS] and [SEP] included): what the APIs call usage."""
        return sum(result.num_tokens for result in self.results)


class ClassifyCalls:
    """The calls of the classify APIs over the model versions; they always answer from the default
    version (these APIs have no way to name another)."""

    def __init__(self, models: ModelRegistry) -> None:
        self.models = models

    def check_model(self, name: str | None) -> None:
        """ModelNotFound unless `name` (when given) is the model served here."""
        if name is not None:
            self.models.check_name(name)

    def info(self) -> EngineInfo:
        return self.models.info()

    def reads_whole(self) -> bool:
        """Whether a long text is read in windows when a call does not say (--long-texts)."""
        return self.models.default().read_whole

    async def classify(
        self, texts: Sequence[str], whole: bool | None = None, priority: Priority = Priority.NORMAL
    ) -> Classified:
        """Each text's label and scores; whole: a text longer than the model reads at once is read
        in windows (True), cut (False), or as the server does (None)."""
        async with self.models.use(0) as engine:  # the version answers it all
            results = await engine.predict(
                list(texts), AttentionMode.NONE, None, json=True, priority=priority, whole=whole
            )
            spec = engine.info().spec
        return Classified(spec.name, spec.version, list(spec.labels), results)

    async def tokenize(self, texts: Sequence[str], special: bool = True) -> list[list[Piece]]:
        """Each text's tokens, the ones past max_length included; a large request in a worker thread."""
        async with self.models.use(0) as engine:
            pieces = engine.preprocessor.pieces
            if sum(map(len, texts)) <= INLINE_TOKENIZE_CHARS:
                return pieces(texts, special)
            return await asyncio.to_thread(pieces, texts, special)
