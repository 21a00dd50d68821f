"""What both clients (_client.py) share: the target and its transport (gRPC for host:port, HTTP/JSON
for http://host:port, _http.py), credentials, token, deadlines, retries, and the conversions between
the API's messages and the SDK's types."""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from opentelemetry import propagate

from sentiment_client._http import SERVICES, http_url, ssl_context
from sentiment_client._retry import RetryPolicy
from sentiment_client.errors import from_status
from sentiment_client.pb.inference import grpc_predict_v2_pb2 as inference_pb
from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from sentiment_client.types import (
    Attention,
    AttentionMode,
    BatchInfo,
    Explain,
    Explanation,
    ModelInfo,
    ModelVersion,
    Prediction,
    Priority,
    WordContribution,
)

DEFAULT_TARGET = "127.0.0.1:50051"
MODES = {
    AttentionMode.NONE: pb.ATTENTION_MODE_NONE,
    AttentionMode.SUMMARY: pb.ATTENTION_MODE_SUMMARY,
    AttentionMode.FULL: pb.ATTENTION_MODE_FULL,
}


EXPLAIN = {
    Explain.NONE: pb.EXPLAIN_MODE_NONE,
    Explain.SHAPLEY: pb.EXPLAIN_MODE_SHAPLEY,
    Explain.OCCLUSION: pb.EXPLAIN_MODE_OCCLUSION,
}


PRIORITIES = {
    Priority.HIGH: pb.PRIORITY_HIGH,
    Priority.NORMAL: pb.PRIORITY_NORMAL,
    Priority.LOW: pb.PRIORITY_LOW,
}


MAX_RETRY_AFTER_S = 60.0  # the longest a Retry-After is honoured for


def _read(value: bytes | str | Path | None) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return Path(value).read_bytes()


def _health_status(response: health_pb2.HealthCheckResponse) -> str:
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


class _BaseClient:
    """What both clients share: target, credentials, token, deadlines, retries, conversions."""

    def __init__(
        self,
        target: str | None = None,
        *,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        token: str | None = None,
        tls: bool = False,
        priority: Priority | str = Priority.NORMAL,
        read_whole: bool | None = None,
        root_certificates: bytes | str | Path | None = None,
        client_certificate: bytes | str | Path | None = None,
        client_key: bytes | str | Path | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self.target = target or os.environ.get("SENTIMENT_TARGET", DEFAULT_TARGET)
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.priority = Priority(priority)
        # a text longer than the model reads at once: read whole in windows, cut, or as the server does
        self._long_texts = {
            None: pb.LONG_TEXTS_UNSPECIFIED,
            True: pb.LONG_TEXTS_WINDOWS,
            False: pb.LONG_TEXTS_TRUNCATE,
        }[read_whole]
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {token}"),) if token else ()
        self._credentials: grpc.ChannelCredentials | None = None
        if tls or root_certificates or client_certificate:
            self._credentials = grpc.ssl_channel_credentials(
                _read(root_certificates), _read(client_key), _read(client_certificate)
            )
        self._options = [("grpc.max_receive_message_length", 64 << 20), *options]
        self._info: ModelInfo | None = None
        self._url = http_url(self.target)
        self._verify: ssl.SSLContext | bool = True  # https: the server checked against the system's roots
        if self._url is not None and (root_certificates or client_certificate):
            self._verify = ssl_context(_read(root_certificates), _read(client_certificate), _read(client_key))

    def _backoff(self, err: grpc.RpcError, attempt: int) -> float:
        """Seconds before the next attempt: the server's Retry-After when it sent one (HTTP), else
        the policy's backoff."""
        retry_after = getattr(err, "retry_after", None)
        return min(float(retry_after), MAX_RETRY_AFTER_S) if retry_after else self.retry.delay(attempt)

    def _unknown_service(self, service: str) -> None:
        """Over HTTP, readiness speaks for the whole server: NotFound for a service it does not serve,
        as grpc.health answers."""
        if service not in SERVICES:
            raise from_status(grpc.StatusCode.NOT_FOUND, f"unknown service {service[:80]!r}")

    def _request(
        self, texts: Sequence[str], attention: AttentionMode | str, explain: Explain | str = Explain.NONE
    ) -> pb.PredictRequest:
        return pb.PredictRequest(
            texts=list(texts),
            attention=MODES[AttentionMode(attention)],
            priority=PRIORITIES[self.priority],
            long_texts=self._long_texts,
            explain=EXPLAIN[Explain(explain)],
        )

    @staticmethod
    def _prediction(text: str, message: pb.Prediction, labels: Sequence[str]) -> Prediction:
        attention = None
        if message.HasField("attention"):
            a = message.attention
            attention = Attention(
                tuple(a.tokens),
                tuple(a.cls_attention),
                tuple(a.rollout),
                a.num_layers,
                a.num_heads,
                tuple(a.weights),
            )
        explanation = None
        if message.HasField("explanation"):
            e = message.explanation
            words = tuple(WordContribution(w.text, w.contribution, w.start, w.end) for w in e.words)
            explanation = Explanation(e.method, e.label, words, e.baseline, e.passes)
        b = message.batch
        return Prediction(
            text=text,
            label=message.label,
            score=message.score,
            probabilities=dict(zip(labels, message.probabilities, strict=True)),
            truncated=message.truncated,
            num_tokens=message.num_tokens,
            batch=BatchInfo(b.queue_seconds, b.compute_seconds, b.batch_size, b.padded_length),
            attention=attention,
            windows=message.windows or 1,
            explanation=explanation,
        )

    @staticmethod
    def _info_of(message: pb.GetModelInfoResponse) -> ModelInfo:
        return ModelInfo(
            name=message.name,
            version=message.version,
            labels=tuple(message.labels),
            max_length=message.max_length,
            num_layers=message.num_layers,
            num_heads=message.num_heads,
            hidden_size=message.hidden_size,
            vocab_size=message.vocab_size,
            metrics=json.loads(message.metrics_json or "{}"),
            available_versions=tuple(message.available_versions),
            max_texts_per_request=message.max_texts_per_request,
            max_text_chars=message.max_text_chars,
            execution_provider=message.execution_provider,
            loaded_versions=tuple(message.loaded_versions),
            default_version=message.default_version,
            shadow_versions=tuple(message.shadow_versions),
            max_explained_words=message.max_explained_words,
        )

    @staticmethod
    def _load_request(
        model: str, versions: Sequence[int] | None, latest: int | None, shadow: bool
    ) -> inference_pb.RepositoryModelLoadRequest:
        """Triton's load request: the version policy as a model configuration's version_policy."""
        if versions is not None and latest is not None:
            raise ValueError("give versions or latest, not both")
        request = inference_pb.RepositoryModelLoadRequest(model_name=model)
        policy: dict[str, Any] | None = None
        if versions is not None:
            policy = {"specific": {"versions": [int(v) for v in versions]}}
        elif latest is not None:
            policy = {"latest": {"num_versions": int(latest)}}
        if policy is not None:
            request.parameters["config"].string_param = json.dumps({"version_policy": policy})
        if shadow:
            request.parameters["shadow"].bool_param = True
        return request

    @staticmethod
    def _unload_request(model: str, version: int | None) -> inference_pb.RepositoryModelUnloadRequest:
        request = inference_pb.RepositoryModelUnloadRequest(model_name=model)
        if version is not None:
            request.parameters["version"].int64_param = int(version)
        return request

    @staticmethod
    def _versions(response: inference_pb.RepositoryIndexResponse) -> list[ModelVersion]:
        return [ModelVersion(m.name, int(m.version), m.state, m.reason) for m in response.models]

    @staticmethod
    def _chunks(texts: Sequence[str], size: int) -> list[Sequence[str]]:
        return [texts[i : i + size] for i in range(0, len(texts), max(1, size))]

    @staticmethod
    def _items(texts: str | Sequence[str]) -> tuple[bool, Sequence[str]]:
        """(whether one text was given, the texts as a sequence): a str is also a Sequence[str]."""
        return (True, [texts]) if isinstance(texts, str) else (False, texts)

    @staticmethod
    def _results(
        chunks: Sequence[Sequence[str]], responses: Sequence[pb.PredictResponse], labels: Sequence[str]
    ) -> list[Prediction]:
        return [
            _BaseClient._prediction(t, p, labels)
            for chunk, response in zip(chunks, responses, strict=True)
            for t, p in zip(chunk, response.predictions, strict=True)
        ]

    def _remember(self, message: pb.GetModelInfoResponse, version: int) -> ModelInfo:
        info = self._info_of(message)
        if not version:
            self._info = info
        return info

    def _call_metadata(self) -> tuple[tuple[str, str], ...]:
        """The token, and the caller's trace context when it has one (W3C traceparent, from
        OpenTelemetry's current context), so that the server's spans join the caller's trace."""
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        return (*self._metadata, *carrier.items()) if carrier else self._metadata

    def _health_call(self, service: str, timeout_s: float | None) -> dict[str, Any]:
        return {
            "request": health_pb2.HealthCheckRequest(service=service),
            "timeout": timeout_s or self.timeout_s,
            "metadata": self._metadata,
        }

    def _stream_requests(
        self, texts: Iterable[str], attention: AttentionMode | str, chunk_size: int, order: _InOrder
    ) -> Iterator[pb.PredictStreamRequest]:
        """The stream's requests, `chunk_size` texts each, numbered; `order` remembers the texts."""
        chunk: list[str] = []
        for text in texts:
            chunk.append(text)
            if len(chunk) == max(1, chunk_size):
                yield order.sent(chunk, self._request(chunk, attention))
                chunk = []
        if chunk:
            yield order.sent(chunk, self._request(chunk, attention))

    def _stream_groups(
        self,
        texts: Iterable[str],
        attention: AttentionMode | str,
        chunk_size: int,
        window: int,
        order: _InOrder,
    ) -> Iterator[list[pb.PredictStreamRequest]]:
        """The stream's requests `window` at a time: over HTTP, each group is one NDJSON exchange."""
        group: list[pb.PredictStreamRequest] = []
        for request in self._stream_requests(texts, attention, chunk_size, order):
            group.append(request)
            if len(group) == max(1, window):
                yield group
                group = []
        if group:
            yield group

    @staticmethod
    def _stream_result(
        response: pb.PredictStreamResponse, texts: Sequence[str], labels: Sequence[str]
    ) -> list[Prediction]:
        if response.WhichOneof("result") == "error":
            raise from_status(
                _CODES.get(response.error.code, grpc.StatusCode.UNKNOWN), response.error.message
            )
        return [
            _BaseClient._prediction(t, p, labels)
            for t, p in zip(texts, response.response.predictions, strict=True)
        ]


_CODES = {code.value[0]: code for code in grpc.StatusCode}  # status number -> code


class _InOrder:
    """Numbers a stream's requests and gives back their predictions in input order, whatever
    order the answers arrive in."""

    def __init__(self, labels: Sequence[str]) -> None:
        self._labels = labels
        self._texts: dict[str, Sequence[str]] = {}
        self._waiting: dict[int, pb.PredictStreamResponse] = {}
        self._sent = 0
        self._next = 0

    def sent(self, chunk: Sequence[str], request: pb.PredictRequest) -> pb.PredictStreamRequest:
        request_id = str(self._sent)
        self._texts[request_id] = list(chunk)
        self._sent += 1
        return pb.PredictStreamRequest(request_id=request_id, request=request)

    def answered(self, response: pb.PredictStreamResponse) -> list[Prediction]:
        """The predictions this answer releases: none while an earlier request is unanswered."""
        self._waiting[int(response.request_id)] = response
        released: list[Prediction] = []
        while self._next in self._waiting:
            ready = self._waiting.pop(self._next)
            released.extend(_BaseClient._stream_result(ready, self._texts.pop(str(self._next)), self._labels))
            self._next += 1
        return released
