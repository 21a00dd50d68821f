"""Every Prometheus metric of the service, on its own registry (ops/scrape.py serves them over HTTP).

With --workers N every worker process writes its metrics into files under PROMETHEUS_MULTIPROC_DIR
(prometheus-client's multiprocess mode) and the parent process serves their sum: counters and
histograms add up; gauges say how they combine (multiprocess_mode), and only live workers count.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from service.core.fair_queue import Priority

if TYPE_CHECKING:
    from service.core.results import TextResult

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
WAIT_BUCKETS = (0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)
COMPUTE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
DROP_REASONS = ("queue_full", "cancelled", "deadline")  # the batcher's reasons for not running a text
# why the HTTP door closed or refused a connection before an endpoint answered (service/http/front.py)
HTTP_REFUSALS = (
    "idle_timeout",  # a connection that sent no request for --http-keepalive-timeout-s
    "evicted",  # the longest-idle connection, closed to make room for a new one at --max-connections
    "over_limit",  # a new connection at --max-connections with none idle to close
    "head_timeout",  # a request line and headers slower than --handshake-timeout-s
    "head_too_large",  # a request line and headers over --max-metadata-bytes
    "bad_request",  # bytes that are not HTTP/1.1, or a request line or URL the parser refuses
    "stream_stalled",  # a stream whose caller stopped reading its answers (--http-read-timeout-s)
)
RATIO_BUCKETS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0)
# the winning label's probability: never below 1/labels (0.5 for two); finest where doubt is
CONFIDENCE_BUCKETS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.99, 1.0)
TOKEN_BUCKETS = (4, 8, 16, 32, 64, 128, 256, 512)
UNKNOWN_BUCKETS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
SHADOW_BUCKETS = LATENCY_BUCKETS


class Metrics:
    """The service's metrics; also the batcher's observer."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "sentiment_requests",
            "Calls answered, by method, status code and protocol (grpc, or http: named after the gRPC "
            "method each endpoint stands for, or http/ and its route, with the gRPC code of its HTTP "
            "status)",
            ["method", "code", "protocol"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "sentiment_request_duration_seconds",
            "Time to answer a call",
            ["method", "protocol"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "sentiment_in_flight_requests",
            "Calls being answered now (gRPC and HTTP)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.queue_wait_seconds = Histogram(
            "sentiment_queue_wait_seconds",
            "Time a text waited before its batch ran, by the priority its request asked for",
            ["priority"],
            buckets=WAIT_BUCKETS,
            registry=r,
        )
        self.compute_seconds = Histogram(
            "sentiment_batch_compute_seconds",
            "ONNX Runtime time per batch",
            buckets=COMPUTE_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "sentiment_batch_size", "Texts per batch", buckets=SIZE_BUCKETS, registry=r
        )
        self.padding_ratio = Histogram(
            "sentiment_batch_padding_ratio",
            "Share of a batch's tokens that are padding",
            buckets=RATIO_BUCKETS,
            registry=r,
        )
        self.queue_depth_texts = Gauge(
            "sentiment_queue_depth", "Texts waiting for a batch", registry=r, multiprocess_mode="livesum"
        )
        self.queue_capacity = Gauge(
            "sentiment_queue_capacity",
            "Most texts that may wait; beyond it calls are refused with RESOURCE_EXHAUSTED",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.texts = Counter("sentiment_texts", "Texts run through the model", registry=r)
        self.tokens = Counter("sentiment_tokens", "Real (unpadded) tokens run through the model", registry=r)
        self.dropped_texts = Counter(
            "sentiment_dropped_texts",
            "Texts not run: queue full, caller cancelled, deadline passed",
            ["reason"],
            registry=r,
        )
        for reason in DROP_REASONS:  # every series exists from the start, at 0, for rate() and alerts
            self.dropped_texts.labels(reason)
        self._waits = {each: self.queue_wait_seconds.labels(each.name.lower()) for each in Priority}
        self.cache_texts = Counter(
            "sentiment_cache_texts",
            "Texts looked up in the answer cache (--cache-entries): hit, answered without the model; "
            "miss, run (hit ratio: hits over both)",
            ["result"],
            registry=r,
        )
        self._cache_hits, self._cache_misses = self.cache_texts.labels("hit"), self.cache_texts.labels("miss")
        self.transport_calls = Counter(
            "sentiment_transport_calls",
            "Calls as gRPC's transport counted them (channelz), refused ones included: started minus "
            "sentiment_requests_total is what it turned away before the service saw it",
            ["outcome"],
            registry=r,
        )
        for outcome in ("started", "succeeded", "failed"):
            self.transport_calls.labels(outcome)
        self.connections = Gauge(
            "sentiment_connections",
            "Open gRPC connections (HTTP/2 handshake done)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.connections_limit = Gauge(
            "sentiment_connections_limit",
            "Most connections accepted (--max-connections per process); beyond it new ones are closed",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.http_refusals = Counter(
            "sentiment_http_refusals",
            "HTTP connections the door closed or refused before an endpoint answered, by reason",
            ["reason"],
            registry=r,
        )
        for reason in HTTP_REFUSALS:
            self.http_refusals.labels(reason)
        # model monitoring: what the model answers, and what it is asked, by model version
        self.predictions = Counter(
            "sentiment_predictions", "Texts answered, by the label given", ["label", "version"], registry=r
        )
        self.confidence = Histogram(
            "sentiment_prediction_confidence",
            "The winning label's probability (calibrated), per text",
            ["version"],
            buckets=CONFIDENCE_BUCKETS,
            registry=r,
        )
        self.text_tokens = Histogram(
            "sentiment_text_tokens",
            "Tokens the model read per text, [CLS] and [SEP] included",
            ["version"],
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.explained = Counter(
            "sentiment_explained_texts",
            "Texts answered with their words' contributions, by method (shapley, occlusion)",
            ["method"],
            registry=r,
        )
        self.explanation_passes = Counter(
            "sentiment_explanation_passes",
            "Sequences the model read to explain texts (each text itself included): explanation work "
            "apart from the rest, by method; the batch metrics count it with all the other work",
            ["method"],
            registry=r,
        )
        self.truncated = Counter(
            "sentiment_truncated_texts",
            "Texts longer than the model reads: their end was not read",
            ["version"],
            registry=r,
        )
        self.unknown_share = Histogram(
            "sentiment_unknown_token_share",
            "Share of a text's tokens the vocabulary did not know ([UNK])",
            ["version"],
            buckets=UNKNOWN_BUCKETS,
            registry=r,
        )
        # an info metric as a gauge of 1 with the model in its labels: Info has no multiprocess mode
        self.model = Gauge(
            "sentiment_model_info",
            "The model being served",
            ["name", "version", "provider", "variant", "labels"],
            registry=r,
            multiprocess_mode="max",
        )
        # model versions (service/versions/registry.py): what each answers and costs, how they change
        self.version_texts = Counter(
            "sentiment_version_texts",
            "Texts run through the model, by model version",
            ["version"],
            registry=r,
        )
        self.version_compute_seconds = Counter(
            "sentiment_version_compute_seconds",
            "ONNX Runtime time spent on batches, by model version",
            ["version"],
            registry=r,
        )
        self.version_events = Counter(
            "sentiment_model_version_events",
            "Model version changes: loaded, shadow (loaded as a shadow), promoted, default (became the "
            "default), refused (failed a check; nothing changed), unloaded",
            ["version", "event"],
            registry=r,
        )
        self.default_version = Gauge(
            "sentiment_model_default_version",
            "The version answering calls that name none (0: none loaded)",
            registry=r,
            multiprocess_mode="max",
        )
        self.shadow_texts = Counter(
            "sentiment_shadow_texts",
            "Texts of sampled calls also run on a shadow version, by whether its label agreed with the "
            "serving default's",
            ["version", "agreement"],
            registry=r,
        )
        self.shadow_seconds = Histogram(
            "sentiment_shadow_seconds",
            "Time a shadow version took to answer a batch of sampled texts, off the callers' path",
            ["version"],
            buckets=SHADOW_BUCKETS,
            registry=r,
        )
        self.shadow_skipped = Counter(
            "sentiment_shadow_skipped_calls",
            "Sampled calls (or, failed, batches) a shadow version did not answer: busy (512 sampled texts "
            "already waiting for a lull in the serving version's queue) or failed",
            ["version", "reason"],
            registry=r,
        )

    def answered(self) -> dict[str, dict[str, int]]:
        """Calls answered so far, both protocols together: {method: {status code: count}}."""
        counts: dict[str, dict[str, int]] = {}
        for family in self.requests.collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    by_code = counts.setdefault(sample.labels["method"], {})
                    code = sample.labels["code"]
                    by_code[code] = by_code.get(code, 0) + int(sample.value)
        return counts

    def batch_done(self, size: int, padded_length: int, real_tokens: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.compute_seconds.observe(seconds)
        self.padding_ratio.observe(1.0 - real_tokens / (size * padded_length))
        self.texts.inc(size)
        self.tokens.inc(real_tokens)

    def model_loaded(self, version: int, labels: Sequence[str]) -> None:
        """Every monitoring series of a version exists from its start, at 0, for rate() and alerts
        (a share of positives is 0, not absent, while every answer is negative)."""
        tag = str(version)
        for label in labels:
            self.predictions.labels(label, tag)
        self.confidence.labels(tag)
        self.text_tokens.labels(tag)
        self.truncated.labels(tag)
        self.unknown_share.labels(tag)

    def predicted(self, texts: Sequence[str], results: Sequence[TextResult], version: int) -> None:
        tag = str(version)
        confidence = self.confidence.labels(tag)
        tokens = self.text_tokens.labels(tag)
        unknown = self.unknown_share.labels(tag)
        truncated = 0
        for label, count in collections.Counter(r.label for r in results).items():
            self.predictions.labels(label, tag).inc(count)
        for result in results:
            confidence.observe(result.score)
            tokens.observe(result.num_tokens)
            unknown.observe(result.unknown_tokens / result.num_tokens)
            truncated += result.truncated
            if result.explanation is not None:
                method = result.explanation.method.value
                self.explained.labels(method).inc()
                self.explanation_passes.labels(method).inc(result.explanation.passes)
        if truncated:
            self.truncated.labels(tag).inc(truncated)

    def queue_wait(self, seconds: float, priority: Priority) -> None:
        self._waits[priority].observe(seconds)

    def dropped(self, reason: str, count: int) -> None:
        self.dropped_texts.labels(reason).inc(count)

    def queue_depth(self, depth: int) -> None:
        self.queue_depth_texts.set(depth)

    def cache_lookups(self, hits: int, misses: int) -> None:
        if hits:
            self._cache_hits.inc(hits)
        if misses:
            self._cache_misses.inc(misses)
