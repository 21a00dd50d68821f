"""Distributed tracing with OpenTelemetry, off unless the standard OTEL_* variables turn it on.

A call's trace: a server span per call (its parent is the caller's W3C traceparent, from gRPC
metadata or HTTP headers), and under it `tokenize`, `queue` (from being queued until the call's
last text's round started), one `model` span per batch that held the call's texts (the batch's
size, padded length, real tokens and padding share; linked to the batch's own span) and `answer`.
So one slow call is explained by its own trace: queue wait, batch size, padding, compute.

A batch serves many traces, so each batch run also has a span of its own, the root of its own
trace, linked to the span of every call that rode in it. It is sampled when any of those calls is
(FollowLinks), so a sampled call's batch is never missing; a batch of unsampled calls costs nothing.

When off, nothing is set up: the front doors, the engine and the batcher hold None and skip every
tracing step. When on, the SDK reads the rest of the standard variables itself: the sampler
(OTEL_TRACES_SAMPLER, OTEL_TRACES_SAMPLER_ARG), the exporter's endpoint, headers, TLS files,
timeout and compression (OTEL_EXPORTER_OTLP_*), the batch processor's queue (OTEL_BSP_*) and the
resource (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES). Spans leave in batches from a thread of
their own, off the request path; a collector that is down costs dropped spans, not slow calls.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from opentelemetry import context as context_api
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.util.types import Attributes

from service.core.errors import StartupError

if TYPE_CHECKING:
    from service.core.batcher import BatchFacts

log = logging.getLogger(__name__)

ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
PROTOCOLS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
SERVICE = "sentiment"


def _first(environ: Mapping[str, str], names: Sequence[str]) -> str | None:
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return value
    return None


def exporter_from_env(environ: Mapping[str, str]) -> SpanExporter | None:
    """The exporter the variables ask for, or None when tracing is off: off unless
    OTEL_TRACES_EXPORTER says otlp or console, or (it unset) an OTLP endpoint is given;
    OTEL_SDK_DISABLED=true turns it off whatever else is set. StartupError for what this server
    cannot do, naming the variable."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    names = [n.strip().lower() for n in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if n.strip()]
    if not names:
        names = ["otlp"] if _first(environ, ENDPOINTS) else []
    if not names or names == ["none"]:
        return None
    if len(names) > 1 or names[0] not in ("otlp", "console"):
        raise StartupError(
            f"OTEL_TRACES_EXPORTER={environ['OTEL_TRACES_EXPORTER']!r}: this server exports to one of "
            "otlp (gRPC), console or none"
        )
    if names[0] == "console":
        return ConsoleSpanExporter()
    protocol = _first(environ, PROTOCOLS) or "grpc"
    if protocol != "grpc":
        raise StartupError(
            f"OTLP protocol {protocol!r} (OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or "
            "OTEL_EXPORTER_OTLP_PROTOCOL): this server exports OTLP over gRPC; set it to grpc"
        )
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


class FollowLinks(Sampler):
    """A root span linked to a sampled span is sampled too (a batch whose calls include a sampled
    one); everything else as the configured sampler decides."""

    def __init__(self, base: Sampler) -> None:
        self.base = base

    def should_sample(
        self,
        parent_context: context_api.Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        parent = trace.get_current_span(parent_context).get_span_context()
        if not parent.is_valid and links and any(link.context.trace_flags.sampled for link in links):
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)
        return self.base.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"FollowLinks{{{self.base.get_description()}}}"


def _ns(monotonic_s: float, offset_ns: int) -> int:
    """A time.monotonic() value as the epoch nanoseconds spans are stamped in."""
    return int(monotonic_s * 1e9) + offset_ns


def _offset_ns() -> int:
    return time.time_ns() - time.monotonic_ns()


# the samplers the SDK builds from OTEL_TRACES_SAMPLER; it takes any other name for the default,
# sampling every call, with only a warning
SAMPLERS = (
    "always_on",
    "always_off",
    "parentbased_always_on",
    "parentbased_always_off",
    "traceidratio",
    "parentbased_traceidratio",
)


def check_sampler(environ: Mapping[str, str]) -> None:
    """StartupError for an OTEL_TRACES_SAMPLER (or a ratio's OTEL_TRACES_SAMPLER_ARG) the SDK would
    quietly replace by sampling everything."""
    name = environ.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
    if name not in SAMPLERS:
        raise StartupError(
            f"OTEL_TRACES_SAMPLER={name[:40]!r} is not a sampler; use one of {', '.join(SAMPLERS)}"
        )
    if name.endswith("traceidratio"):
        arg = environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0")
        try:
            ratio = float(arg)
        except ValueError:
            ratio = -1.0
        if not 0.0 <= ratio <= 1.0:
            raise StartupError(f"OTEL_TRACES_SAMPLER_ARG={arg[:40]!r} is not a ratio from 0 to 1 for {name}")


class Tracing:
    """The tracer and the spans the service makes; one per process."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("service")
        self._ids = TraceIds()
        self._handlers: list[logging.Handler] = []

    @classmethod
    def from_env(cls, version: str, environ: Mapping[str, str] | None = None) -> Tracing | None:
        """Tracing as the OTEL_* variables configure it, or None when they leave it off."""
        environ = os.environ if environ is None else environ
        exporter = exporter_from_env(environ)
        if exporter is None:
            return None
        check_sampler(environ)
        resource = Resource.create({SERVICE_VERSION: version})
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: SERVICE}))
        provider = TracerProvider(resource=resource, shutdown_on_exit=False)
        provider.sampler = FollowLinks(provider.sampler)  # before any tracer: tracers copy it
        provider.add_span_processor(BatchSpanProcessor(exporter))
        tracing = cls(provider)
        log.info(
            "tracing on: %s, sampler %s, service %s",
            type(exporter).__name__,
            provider.sampler.get_description(),
            resource.attributes.get(SERVICE_NAME),
        )
        return tracing

    def log_ids(self) -> None:
        """Trace and span ids on every log record from now on (TraceIds on the root handlers)."""
        self._handlers = list(logging.getLogger().handlers)
        for handler in self._handlers:
            handler.addFilter(self._ids)

    def shutdown(self) -> None:
        """Send the spans still buffered (within the processor's export timeout), then stop."""
        for handler in self._handlers:
            handler.removeFilter(self._ids)
        self.provider.shutdown()

    # the call's own spans -------------------------------------------------------------------------

    def start_call(
        self, name: str, carrier: Mapping[str, str], attributes: Attributes
    ) -> tuple[trace.Span, object]:
        """A call's server span, made current until end_call; its parent is the caller's context."""
        span = self.tracer.start_span(
            name, propagate.extract(carrier), SpanKind.SERVER, attributes, record_exception=False
        )
        token = context_api.attach(trace.set_span_in_context(span))
        return span, token

    @staticmethod
    def end_call(opened: tuple[trace.Span, object], code: str, attributes: Attributes = None) -> None:
        span, token = opened
        if span.is_recording():
            if attributes:
                span.set_attributes(attributes)
            if code != "OK":
                span.set_status(Status(StatusCode.ERROR, code))
            span.end()
        context_api.detach(token)  # type: ignore[arg-type]  # both front doors end in the same task

    def step(self, name: str, attributes: Attributes = None) -> AbstractContextManager[Any]:
        """A child of the current span for one step of the call; nothing when the call is not sampled."""
        if not trace.get_current_span().is_recording():
            return nullcontext()
        return self.tracer.start_as_current_span(name, attributes=attributes, record_exception=False)

    @staticmethod
    def current() -> SpanContext | None:
        """The current call's span, for the batches its texts ride in to link to; None when unsampled."""
        context = trace.get_current_span().get_span_context()
        return context if context.trace_flags.sampled else None

    def served(self, enqueued: float, rides: Sequence[Ride]) -> None:
        """The call's queue span and one model span per batch that held its texts, stamped with
        the times the batcher measured; rides: one per text."""
        if not rides or not trace.get_current_span().is_recording():
            return
        offset = _offset_ns()
        batches: dict[int, list[Ride]] = {}
        for ride in rides:
            batches.setdefault(id(ride.batch), []).append(ride)
        round_started = max(ride.round_started for ride in (r[0] for r in batches.values()))
        queue = self.tracer.start_span("queue", start_time=_ns(enqueued, offset))
        queue.set_attribute("queue.wait_ms", round((round_started - enqueued) * 1000, 3))
        queue.end(_ns(round_started, offset))
        for same in batches.values():
            batch = same[0].batch
            attributes = {**batch.attributes, "call.texts_in_batch": len(same)}
            span = self.tracer.start_span(
                "model", links=[Link(batch.context)], attributes=attributes, start_time=batch.start_ns
            )
            span.end(batch.end_ns)


class BatchTrace:
    """One batch's run as its calls' spans see it: when it ran (epoch ns), what it was, its span."""

    __slots__ = ("attributes", "context", "end_ns", "start_ns")

    def __init__(self, start_ns: int, end_ns: int, attributes: dict[str, Any], context: SpanContext) -> None:
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.attributes = attributes
        self.context = context


class Ride:
    """One text's place: the round it waited for and the batch it ran in."""

    __slots__ = ("batch", "round_started")

    def __init__(self, round_started: float, batch: BatchTrace) -> None:
        self.round_started = round_started
        self.batch = batch


class BatchTracing:
    """The batcher's side: one span per batch run, linked to its sampled calls' spans."""

    def __init__(self, tracing: Tracing, attributes: Mapping[str, Any]) -> None:
        self.tracer = tracing.tracer
        self.attributes = dict(attributes)  # the model's name, version and provider

    def batch(self, calls: Iterable[SpanContext | None], facts: BatchFacts) -> Ride | None:
        """The batch's span when a sampled call rode in it, stamped with when it ran, and the ride
        its texts' calls record (None when no sampled call rode in it)."""
        links, seen = [], set()
        for call in calls:
            if call is not None and call.span_id not in seen:
                seen.add(call.span_id)
                links.append(Link(call))
        if not links:
            return None
        padded = facts.size * facts.padded_length
        attributes = {
            **self.attributes,
            "batch.size": facts.size,
            "batch.padded_length": facts.padded_length,
            "batch.tokens": facts.tokens,
            "batch.padding_share": round(1 - facts.tokens / padded, 4) if padded else 0.0,
            "batch.wide": facts.wide,
        }
        offset = _offset_ns()
        start_ns, end_ns = _ns(facts.began, offset), _ns(facts.began + facts.seconds, offset)
        span = self.tracer.start_span(
            "batch", links=links, attributes={**attributes, "batch.calls": len(links)}, start_time=start_ns
        )
        if facts.failed:
            span.set_status(Status(StatusCode.ERROR, "the runtime failed on this batch"))
        span.end(end_ns)
        return Ride(facts.round_started, BatchTrace(start_ns, end_ns, attributes, span.get_span_context()))


class TraceIds(logging.Filter):
    """Puts the current trace and span ids on every log record (trace_id, span_id, trace_sampled),
    so that log lines and traces join up; JSON logs carry them as keys."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
            record.trace_sampled = context.trace_flags.sampled
        return True
