"""The access log: one line per call, for a sampled share of calls, on the `service.access` logger.

A line names the method, protocol, status code, peer, time taken, and what the model did for the
call: texts, real tokens, the longest queue wait and compute time among its texts, and the model
version. It never holds the bearer token, and holds the texts only with --access-log-texts. With
--log-format json every field is its own JSON key; otherwise the line is key=value pairs.

The front doors (the gRPC interceptor, the HTTP middleware) open a record for a sampled call; the
engine's prediction observer fills it from the same task, through a context variable, so a call
that is not sampled costs one random number.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from opentelemetry import trace

if TYPE_CHECKING:
    from service.core.results import TextResult

log = logging.getLogger("service.access")


@dataclass
class CallRecord:
    """What the engine did for one call."""

    texts: int = 0
    tokens: int = 0
    queue_ms: float = 0.0
    compute_ms: float = 0.0
    version: int | None = None
    said: list[str] = field(default_factory=list)  # the texts, only when asked for


_CALL: ContextVar[CallRecord | None] = ContextVar("sentiment_call", default=None)


class AccessLog:
    """Samples calls and writes their lines; also the engine's prediction observer."""

    def __init__(self, sample: float, with_texts: bool, rng: random.Random | None = None) -> None:
        self.sample = sample
        self.with_texts = with_texts
        self._random = (rng or random.Random()).random

    def begin(self) -> tuple[CallRecord, Token[CallRecord | None]] | None:
        """A record for this call when it is sampled (None otherwise)."""
        if not self.sample or self._random() >= self.sample:
            return None
        record = CallRecord()
        return record, _CALL.set(record)

    def end(
        self,
        opened: tuple[CallRecord, Token[CallRecord | None]] | None,
        method: str,
        code: str,
        protocol: str,
        peer: str,
        seconds: float,
    ) -> None:
        if opened is None:
            return
        record, token = opened
        try:
            _CALL.reset(token)
        except ValueError:  # ended in another context (a streamed HTTP answer): nothing to restore
            pass
        fields: dict[str, object] = {
            "method": method,
            "code": code,
            "protocol": protocol,
            "peer": peer,
            "ms": round(seconds * 1000, 3),
            "texts": record.texts,
            "tokens": record.tokens,
            "queue_ms": round(record.queue_ms, 3),
            "compute_ms": round(record.compute_ms, 3),
            "version": record.version,
        }
        traced = trace.get_current_span().get_span_context()
        if traced.is_valid:  # tracing is on: the line names its call's trace
            fields["trace_id"] = format(traced.trace_id, "032x")
        if self.with_texts:
            fields["said"] = record.said
        text = " ".join(f"{key}={value}" for key, value in fields.items() if key != "said")
        log.info("access %s", text, extra=fields)

    def predicted(self, texts: Sequence[str], results: Sequence[TextResult], version: int) -> None:
        record = _CALL.get()
        if record is None:
            return
        record.texts += len(results)
        record.tokens += sum(r.num_tokens for r in results)
        record.queue_ms = max([record.queue_ms, *(1000 * r.served.queue_seconds for r in results)])
        record.compute_ms = max([record.compute_ms, *(1000 * r.served.compute_seconds for r in results)])
        record.version = version
        if self.with_texts:
            record.said.extend(texts)
