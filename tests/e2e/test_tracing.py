"""Tracing against a real OTLP receiver on loopback: a call's spans arrive parented on the caller's
context, each batch's span is linked to the calls that rode in it, logs name the trace, sampling
follows the caller, and the SDK and CLI carry the caller's context."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry import trace
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.trace import TracerProvider

from bench.otlp_receiver import OtlpReceiver, attributes_of
from sentiment_client import AsyncSentimentClient, SentimentClient
from sentiment_client.pb.inference import grpc_predict_v2_pb2 as inference_pb
from sentiment_client.pb.inference import grpc_predict_v2_pb2_grpc as inference_grpc
from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from sentiment_client.pb.sentiment.v1 import sentiment_pb2_grpc
from service.core.errors import StartupError
from service.ops.tracing import exporter_from_env
from tests.e2e.conftest import PATIENCE_S, RunningServer, launch

PREDICT = "sentiment.v1.SentimentService/Predict"
SENTIMENT = str(Path(sys.executable).with_name("sentiment"))
SERVER_KIND = trace_pb2.Span.SPAN_KIND_SERVER


def traceparent(sampled: bool = True) -> tuple[str, bytes, bytes]:
    """A caller's traceparent header, with its trace id and span id as OTLP writes them."""
    trace_id, span_id = secrets.token_bytes(16), secrets.token_bytes(8)
    return f"00-{trace_id.hex()}-{span_id.hex()}-{'01' if sampled else '00'}", trace_id, span_id


def otel_env(receiver: OtlpReceiver, **more: str) -> dict[str, str]:
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50", **more}


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def traced(
    model_root: Path, tmp_path_factory: pytest.TempPathFactory, receiver: OtlpReceiver
) -> Iterator[RunningServer]:
    """One batch at a time, waiting a little for company: calls share batches."""
    running = launch(
        model_root, tmp_path_factory.mktemp("traced"),
        "--max-concurrent-batches", "1", "--max-queue-delay-ms", "20",
        "--log-format", "json", "--access-log-sample", "1",
        env=otel_env(receiver),
    )  # fmt: skip
    try:
        yield running
    finally:
        assert running.stop() == 0, running.log()


def in_trace(receiver: OtlpReceiver, trace_id: bytes, names: set[str]) -> list[trace_pb2.Span]:
    """The spans of one trace, once every name in `names` has arrived."""
    spans = receiver.wait_for(lambda got: names <= {s.name for s in got if s.trace_id == trace_id})
    return [span for span in spans if span.trace_id == trace_id]


def by_name(spans: list[trace_pb2.Span], name: str) -> list[trace_pb2.Span]:
    return [span for span in spans if span.name == name]


def ms(span: trace_pb2.Span) -> float:
    return (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6


def test_a_call_is_explained_by_its_own_trace(traced: RunningServer, receiver: OtlpReceiver) -> None:
    header, trace_id, caller_span = traceparent()
    texts = ["A short one.", "A much longer text about a film that went on and on, and then on again."]
    with grpc.insecure_channel(traced.target) as channel:
        stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
        stub.Predict(pb.PredictRequest(texts=texts), metadata=[("traceparent", header)], timeout=PATIENCE_S)
    spans = in_trace(receiver, trace_id, {PREDICT, "tokenize", "queue", "model", "answer"})
    (server,) = by_name(spans, PREDICT)
    assert server.parent_span_id == caller_span and server.kind == SERVER_KIND
    assert attributes_of(server) == {
        "rpc.system": "grpc",
        "rpc.service": "sentiment.v1.SentimentService",
        "rpc.method": "Predict",
        "rpc.grpc.status_code": 0,
        "network.peer.address": attributes_of(server)["network.peer.address"],
    }
    assert attributes_of(server)["network.peer.address"].startswith("ipv4:127.0.0.1:")
    children = [span for span in spans if span is not server]
    assert {span.parent_span_id for span in children} == {server.span_id}
    (tokenize,) = by_name(spans, "tokenize")
    assert attributes_of(tokenize) == {
        "call.texts": 2,
        "call.tokens": attributes_of(tokenize)["call.tokens"],
        "call.truncated": 0,
    }
    (queue,) = by_name(spans, "queue")
    models = by_name(spans, "model")
    # the story in order: tokenized, queued, run, answered; all inside the call's own span
    assert tokenize.end_time_unix_nano <= queue.start_time_unix_nano + 1_000_000
    assert queue.end_time_unix_nano <= min(m.start_time_unix_nano for m in models) + 1_000_000
    assert (
        by_name(spans, "answer")[0].start_time_unix_nano
        >= max(m.end_time_unix_nano for m in models) - 1_000_000
    )
    for span in children:
        assert server.start_time_unix_nano <= span.start_time_unix_nano
        assert span.end_time_unix_nano <= server.end_time_unix_nano
    assert attributes_of(queue)["queue.wait_ms"] == pytest.approx(ms(queue), abs=0.01)
    seen = sum(attributes_of(m)["call.texts_in_batch"] for m in models)
    assert seen == 2
    for model in models:
        facts = attributes_of(model)
        assert facts["batch.size"] >= facts["call.texts_in_batch"] and facts["batch.padded_length"] >= 4
        assert 0 <= facts["batch.padding_share"] < 1 and facts["model.version"] == 1
        assert facts["model.provider"] == "CPUExecutionProvider" and facts["model.name"] == "sentiment"
        (link,) = model.links
        batch = receiver.wait_for(lambda got, link=link: any(s.span_id == link.span_id for s in got))
        (batch_span,) = [s for s in batch if s.span_id == link.span_id]
        # the batch's own span: a root of its own trace, linked back to this call, with the same facts
        assert batch_span.name == "batch" and not batch_span.parent_span_id
        assert batch_span.trace_id == link.trace_id != trace_id
        assert server.span_id in {lnk.span_id for lnk in batch_span.links}
        assert (batch_span.start_time_unix_nano, batch_span.end_time_unix_nano) == (
            model.start_time_unix_nano,
            model.end_time_unix_nano,
        )
        assert attributes_of(batch_span)["batch.size"] == facts["batch.size"]
    resource = next(res for res, span in receiver.spans() if span.span_id == server.span_id)
    assert resource["service.name"] == "sentiment" and resource["service.version"]


def test_a_batch_span_links_every_call_that_rode_in_it(traced: RunningServer, receiver: OtlpReceiver) -> None:
    callers = [traceparent() for _ in range(16)]

    async def send() -> None:
        async with grpc.aio.insecure_channel(traced.target) as channel:
            stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
            await asyncio.gather(
                *(
                    stub.Predict(
                        pb.PredictRequest(texts=[f"caller {i} liked it"]),
                        metadata=[("traceparent", h)],
                        timeout=PATIENCE_S,
                    )
                    for i, (h, _, _) in enumerate(callers)
                )
            )

    asyncio.run(send())
    ours = {trace_id for _, trace_id, _ in callers}

    def all_calls_in(spans: list[trace_pb2.Span]) -> bool:
        return ours <= {s.trace_id for s in spans if s.name == PREDICT}

    spans = receiver.wait_for(all_calls_in)
    servers = {s.span_id: s for s in spans if s.name == PREDICT and s.trace_id in ours}
    model_links = {s.links[0].span_id: s for s in spans if s.name == "model" and s.trace_id in ours}
    shared = [
        s
        for s in spans
        if s.name == "batch" and s.span_id in model_links and attributes_of(s)["batch.calls"] > 1
    ]
    assert shared, "16 calls sent at once on one batch slot never shared a batch"
    for batch in shared:
        linked = [link.span_id for link in batch.links]
        assert len(linked) == attributes_of(batch)["batch.calls"] == len(set(linked))
        assert set(linked) <= set(servers)  # each link is one caller's call span, in its own trace
        assert len({servers[span_id].trace_id for span_id in linked}) == len(linked)


def test_http_kserve_errors_and_probes(traced: RunningServer, receiver: OtlpReceiver) -> None:
    header, http_trace, caller_span = traceparent()
    request = urllib.request.Request(
        f"{traced.http}/v1/predict",
        json.dumps({"texts": ["over HTTP"]}).encode(),
        {"Content-Type": "application/json", "traceparent": header},
    )
    urllib.request.urlopen(request, timeout=PATIENCE_S).read()
    kserve_header, kserve_trace, _ = traceparent()
    failed_header, failed_trace, _ = traceparent()
    with grpc.insecure_channel(traced.target) as channel:
        infer = inference_grpc.GRPCInferenceServiceStub(channel).ModelInfer
        text = inference_pb.ModelInferRequest.InferInputTensor(name="text", datatype="BYTES", shape=[1])
        text.contents.bytes_contents.append(b"over KServe")
        infer(
            inference_pb.ModelInferRequest(model_name="sentiment", inputs=[text]),
            metadata=[("traceparent", kserve_header)],
            timeout=PATIENCE_S,
        )
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=PATIENCE_S).status == 1
        urllib.request.urlopen(f"{traced.http}/v2/health/ready", timeout=PATIENCE_S).read()
        with pytest.raises(grpc.RpcError) as refused:
            stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
            stub.Predict(
                pb.PredictRequest(texts=[]), metadata=[("traceparent", failed_header)], timeout=PATIENCE_S
            )
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    http_spans = in_trace(receiver, http_trace, {"POST /v1/predict", "tokenize", "model", "answer"})
    (server,) = by_name(http_spans, "POST /v1/predict")
    assert server.parent_span_id == caller_span and server.kind == SERVER_KIND
    facts = attributes_of(server)
    assert facts["http.response.status_code"] == 200 and facts["http.route"] == "/v1/predict"
    assert facts["rpc.method"] == PREDICT and facts["http.request.method"] == "POST"
    infer_name = "inference.GRPCInferenceService/ModelInfer"
    assert by_name(in_trace(receiver, kserve_trace, {infer_name, "tokenize", "model", "answer"}), infer_name)
    (failed,) = in_trace(receiver, failed_trace, {PREDICT})
    assert (
        failed.status.code == trace_pb2.Status.STATUS_CODE_ERROR
        and failed.status.message == "INVALID_ARGUMENT"
    )
    assert attributes_of(failed)["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    names = {span.name for _, span in receiver.spans()}
    assert not [name for name in names if "Health" in name or "health" in name], names


def test_log_lines_name_their_calls_trace(traced: RunningServer, receiver: OtlpReceiver) -> None:
    header, trace_id, _ = traceparent()
    with grpc.insecure_channel(traced.target) as channel:
        stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
        stub.Predict(
            pb.PredictRequest(texts=["logged"]), metadata=[("traceparent", header)], timeout=PATIENCE_S
        )
    (server,) = by_name(in_trace(receiver, trace_id, {PREDICT}), PREDICT)

    def access_line() -> dict[str, Any] | None:
        for line in traced.log().splitlines():
            record = json.loads(line)
            if record.get("name") == "service.access" and record.get("trace_id") == trace_id.hex():
                return record
        return None

    receiver.wait_for(lambda _: access_line() is not None)
    record = access_line()
    assert (
        record is not None and record["span_id"] == server.span_id.hex() and record["trace_sampled"] is True
    )
    assert f"trace_id={trace_id.hex()}" in record["message"]


def test_sampling_follows_the_caller(model_root: Path, tmp_path: Path, receiver: OtlpReceiver) -> None:
    env = otel_env(receiver, OTEL_TRACES_SAMPLER="parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG="0")
    running = launch(model_root, tmp_path, env=env)
    unsampled = [traceparent(sampled=False) for _ in range(4)]
    header, trace_id, _ = traceparent(sampled=True)
    try:
        with grpc.insecure_channel(running.target) as channel:
            stub = sentiment_pb2_grpc.SentimentServiceStub(channel)
            for quiet, _, _ in unsampled:
                stub.Predict(
                    pb.PredictRequest(texts=["not traced"]),
                    metadata=[("traceparent", quiet)],
                    timeout=PATIENCE_S,
                )
            stub.Predict(pb.PredictRequest(texts=["no caller context"]), timeout=PATIENCE_S)
            stub.Predict(
                pb.PredictRequest(texts=["traced"]), metadata=[("traceparent", header)], timeout=PATIENCE_S
            )
        spans = in_trace(receiver, trace_id, {PREDICT, "model"})
    finally:
        assert running.stop() == 0, running.log()
    # spans leave in the order they end: the sampled call's arrived, so any earlier ones would have
    (model,) = by_name(spans, "model")
    everything = [span for _, span in receiver.spans()]
    assert not {span.trace_id for span in everything} & {trace_id for _, trace_id, _ in unsampled}
    assert any(s.span_id == model.links[0].span_id for s in everything)  # its batch, sampled by the link
    ours = [
        s for res, s in receiver.spans() if s.start_time_unix_nano >= spans[0].start_time_unix_nano - 10**9
    ]
    roots = [s for s in ours if s.name == PREDICT and not s.parent_span_id]
    assert not roots, "a call with no caller context was sampled at ratio 0"


def test_client_and_cli_carry_the_callers_context(traced: RunningServer, receiver: OtlpReceiver) -> None:
    tracer = TracerProvider().get_tracer("caller")  # a caller's own SDK, not installed globally
    with tracer.start_as_current_span("caller's work") as span:
        with SentimentClient(traced.target) as client:
            client.predict("from the blocking client")
        caller = span.get_span_context()

    async def from_async() -> trace.SpanContext:
        with tracer.start_as_current_span("async caller's work") as span:
            async with AsyncSentimentClient(traced.target) as client:
                await client.predict(["from the asyncio client", "and a second text"])
            return span.get_span_context()

    async_caller = asyncio.run(from_async())
    header, cli_trace, cli_span = traceparent()
    result = subprocess.run(
        [SENTIMENT, "predict", "from the command line"],
        capture_output=True, text=True, timeout=PATIENCE_S, check=False,
        env={**os.environ, "SENTIMENT_TARGET": traced.target, "TRACEPARENT": header},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for context in (caller, async_caller):
        trace_id = context.trace_id.to_bytes(16, "big")
        (server,) = by_name(in_trace(receiver, trace_id, {PREDICT}), PREDICT)
        assert server.parent_span_id == context.span_id.to_bytes(8, "big")
    (server,) = by_name(in_trace(receiver, cli_trace, {PREDICT}), PREDICT)
    assert server.parent_span_id == cli_span


def test_off_unless_the_environment_turns_it_on(server: RunningServer) -> None:
    assert exporter_from_env({}) is None
    assert (
        exporter_from_env({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317"})
        is None
    )
    assert exporter_from_env({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}) is None
    assert exporter_from_env({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x:4317"}) is not None
    assert exporter_from_env({"OTEL_TRACES_EXPORTER": "console"}) is not None
    with pytest.raises(StartupError, match="zipkin"):
        exporter_from_env({"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(StartupError, match="http/protobuf"):
        exporter_from_env({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"})
    assert "tracing on" not in server.log()  # the shared server runs with no OTEL_* variables


def test_a_setting_it_cannot_honour_stops_the_start(model_root: Path, tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="OTEL_TRACES_EXPORTER='jaeger'"):
        launch(model_root, tmp_path, env={"OTEL_TRACES_EXPORTER": "jaeger"})
