"""Call observation, written once for both doors: each call is counted by method, protocol and the
status its caller received, timed, held in the drain until it is answered, written to the sampled
access log, and (when tracing is on) given a server span whose parent is the caller's context."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.ops.access import AccessLog
    from service.ops.metrics import Metrics
    from service.ops.tracing import Tracing

CARRIED = frozenset({"traceparent", "tracestate", "baggage"})  # the W3C context a caller may send


class Drain:
    """Knows when accepted work is done, so that shutdown waits for it and nothing else; `closing`
    is set once the server drains, for what would otherwise stay open (health watches)."""

    def __init__(self) -> None:
        self._work = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.closing = asyncio.Event()

    def begin(self) -> None:
        self._work += 1
        self._idle.clear()

    def end(self) -> None:
        self._work -= 1
        if not self._work:
            self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()

    def close(self) -> None:
        """Accepted work is done (or out of time): what stays open by nature is asked to end."""
        self.closing.set()


@dataclass
class Opened:
    """One call being observed, from begin() to end()."""

    protocol: str
    peer: Callable[[], str]
    started: float
    holds_drain: bool
    access: Any  # AccessLog.begin's record, or None
    span: Any  # Tracing.start_call's span and token, or None


class CallObserver:
    """begin() as a call arrives, end() as it is answered, however it ends; both doors call them in
    the call's own task (the span is current in between)."""

    def __init__(
        self, metrics: Metrics, drain: Drain, access: AccessLog | None = None, tracing: Tracing | None = None
    ) -> None:
        self.metrics = metrics
        self.drain = drain
        self.access = access
        self.tracing = tracing
        self._counters: dict[tuple[str, str, str], Any] = {}
        self._seconds: dict[tuple[str, str], Any] = {}

    def begin(
        self,
        protocol: str,
        peer: Callable[[], str],
        name: str | None = None,
        carrier: Mapping[str, str] | None = None,
        attributes: Mapping[str, Any] | None = None,
        holds_drain: bool = True,
    ) -> Opened:
        """peer(): the caller's address, asked only when a record needs it; name: the span's name, or
        None for a call that is not traced (health probes, the page's files)."""
        span = None
        if name is not None and self.tracing is not None:
            described = {**(attributes or {}), "network.peer.address": peer()}
            span = self.tracing.start_call(name, carrier or {}, described)
        self.metrics.in_flight.inc()
        if holds_drain:
            self.drain.begin()
        access = self.access.begin() if self.access is not None else None
        return Opened(protocol, peer, time.perf_counter(), holds_drain, access, span)

    def end(
        self,
        opened: Opened,
        rpc: str,
        code: str,
        attributes: Mapping[str, Any] | None = None,
        span_name: str | None = None,
    ) -> None:
        """The call `rpc` (the gRPC method it is or stands for) was answered with `code`; attributes
        and span_name complete its span (an HTTP route is known once the call was routed)."""
        elapsed = time.perf_counter() - opened.started
        metrics, protocol = self.metrics, opened.protocol
        metrics.in_flight.dec()
        if opened.holds_drain:
            self.drain.end()
        counter = self._counters.get((rpc, code, protocol))
        if counter is None:
            counter = self._counters[(rpc, code, protocol)] = metrics.requests.labels(rpc, code, protocol)
        counter.inc()
        seconds = self._seconds.get((rpc, protocol))
        if seconds is None:
            seconds = self._seconds[(rpc, protocol)] = metrics.request_seconds.labels(rpc, protocol)
        seconds.observe(elapsed)
        if opened.access is not None and self.access is not None:
            self.access.end(opened.access, rpc, code, protocol, opened.peer(), elapsed)
        if opened.span is not None and self.tracing is not None:
            span = opened.span[0]
            if span_name is not None and span.is_recording():
                span.update_name(span_name)
            self.tracing.end_call(opened.span, code, dict(attributes or {}))
