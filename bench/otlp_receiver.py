"""An OTLP trace receiver on loopback: the collector's gRPC TraceService, built from the published
OTLP protobufs, keeping every span it is sent. The tracing tests check what arrives; the tracing
bench sends its spans here so that exporting costs what it costs against a real collector."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as service_pb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc as service_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2


def value_of(value: common_pb2.AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [value_of(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def attributes_of(span: trace_pb2.Span | trace_pb2.Span.Link) -> dict[str, Any]:
    return {kv.key: value_of(kv.value) for kv in span.attributes}


class _Collector(service_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spans: list[tuple[dict[str, Any], trace_pb2.Span]] = []
        self.requests = 0

    def Export(
        self, request: service_pb.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> service_pb.ExportTraceServiceResponse:
        with self.lock:
            self.requests += 1
            for resource_spans in request.resource_spans:
                resource = {kv.key: value_of(kv.value) for kv in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend((resource, span) for span in scope_spans.spans)
        return service_pb.ExportTraceServiceResponse()


class OtlpReceiver:
    """A TraceService on 127.0.0.1 (a free port); `endpoint` is what OTEL_EXPORTER_OTLP_ENDPOINT takes."""

    def __init__(self) -> None:
        self._collector = _Collector()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        service_grpc.add_TraceServiceServicer_to_server(self._collector, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> OtlpReceiver:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop(grace=None)

    def spans(self) -> list[tuple[dict[str, Any], trace_pb2.Span]]:
        """(resource attributes, span) for every span received so far."""
        with self._collector.lock:
            return list(self._collector.spans)

    def clear(self) -> None:
        with self._collector.lock:
            self._collector.spans.clear()

    def wait_for(
        self, done: Callable[[list[trace_pb2.Span]], bool], timeout_s: float = 20.0
    ) -> list[trace_pb2.Span]:
        """The spans received, once done(spans) holds; AssertionError naming what came if it never does."""
        until = time.monotonic() + timeout_s
        while True:
            spans = [span for _, span in self.spans()]
            if done(spans):
                return spans
            if time.monotonic() > until:
                names = sorted({span.name for span in spans})
                raise AssertionError(f"{len(spans)} spans arrived ({names}); not what was waited for")
            time.sleep(0.05)
