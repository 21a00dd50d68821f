"""Assembles the gRPC server: servicers, health, reflection, interceptors, TLS, metrics endpoint."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
from typing import Any

import grpc
from google.protobuf import symbol_database
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from sentiment_client.pb.inference import grpc_predict_v2_pb2 as inference_pb
from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from service.core.batcher import BatchObserver
from service.core.engine import Engine
from service.core.errors import StartupError
from service.core.results import PredictionObserver, PredictionObservers
from service.grpc.boundary import lenient
from service.grpc.inference import SERVER_VERSION, InferenceServicer
from service.grpc.interceptors import (
    AuthInterceptor,
    DrainInterceptor,
    MetricsInterceptor,
    TracingInterceptor,
)
from service.grpc.sentiment import SentimentServicer
from service.http.app import Front, Limits, build_app
from service.http.front import HttpFront
from service.ops.access import AccessLog
from service.ops.metrics import Metrics, MetricsEndpoint
from service.ops.settings import ModelControl, Settings
from service.ops.tracing import Tracing
from service.ops.transport import TransportStats, server_ids
from service.versions.assembly import build_engine
from service.versions.registry import ModelRegistry

log = logging.getLogger(__name__)

SENTIMENT_SERVICE = pb.DESCRIPTOR.services_by_name["SentimentService"]
INFERENCE_SERVICE = inference_pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]


def generic_handler(servicer: Any, service: ServiceDescriptor) -> grpc.GenericRpcHandler:
    """Handlers for every method of `service`, with deserializers that report malformed input."""
    database = symbol_database.Default()
    handlers = {}
    for method in service.methods:
        request_class = database.GetSymbol(method.input_type.full_name)
        kwargs = {
            "request_deserializer": lenient(request_class),
            "response_serializer": lambda message: message.SerializeToString(),
        }
        behaviour = getattr(servicer, method.name)
        if method.client_streaming and method.server_streaming:
            handlers[method.name] = grpc.stream_stream_rpc_method_handler(behaviour, **kwargs)
        elif method.client_streaming:
            handlers[method.name] = grpc.stream_unary_rpc_method_handler(behaviour, **kwargs)
        elif method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(behaviour, **kwargs)
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(behaviour, **kwargs)
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def transport_options(settings: Settings) -> list[tuple[str, int]]:
    """gRPC core's channel arguments for the server's transport limits."""
    ms = 1000
    return [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", int(settings.reuse_port)),
        ("grpc.max_allowed_incoming_connections", settings.max_connections),
        ("grpc.max_concurrent_streams", settings.max_streams_per_connection),
        ("grpc.server_handshake_timeout_ms", int(settings.handshake_timeout_s * ms)),
        ("grpc.max_connection_idle_ms", int(settings.idle_timeout_s * ms)),
        ("grpc.keepalive_time_ms", int(settings.keepalive_time_s * ms)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_s * ms)),
        ("grpc.max_metadata_size", settings.max_metadata_bytes),
        ("grpc.absolute_max_metadata_size", settings.max_metadata_bytes),
    ]


def _credentials(settings: Settings) -> grpc.ServerCredentials | None:
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    pair = (settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())
    if settings.tls_client_ca_file is None:
        return grpc.ssl_server_credentials([pair])
    return grpc.ssl_server_credentials(
        [pair], root_certificates=settings.tls_client_ca_file.read_bytes(), require_client_auth=True
    )


def bind(host: str, port: int, option: int, flag: str = "--port") -> socket.socket:
    """A TCP socket with the socket option `option` on, bound to host:port; StartupError naming the
    flags (`flag` for the port) when the address is taken or is not this machine's."""
    # named TCP, not protocol 0: asyncio sets TCP_NODELAY only on sockets it recognises as TCP, and
    # without it an answer's head and body wait on the caller's delayed acknowledgement (Nagle)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, option, 1)
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise StartupError(
            f"--host {host} {flag} {port}: {err.strerror or err} (another server, or another group of "
            "workers, already serves it?)"
        ) from err
    return sock


def check_port_free(host: str, port: int, flag: str = "--port") -> None:
    """StartupError when something listens on host:port already (port 0 is always free): a bind
    without SO_REUSEPORT fails beside any listener, SO_REUSEPORT ones included; SO_REUSEADDR lets
    it past connections of an earlier server still in TIME_WAIT."""
    if port:
        bind(host, port, socket.SO_REUSEADDR, flag).close()


class Server:
    """The whole service in one process; start() loads the model first and fails fast."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.access = AccessLog(settings.access_log_sample, settings.access_log_texts)
        self.models: ModelRegistry | None = None
        self._follow: asyncio.Task[None] | None = None
        self._following_models = False
        self.health = health.aio.HealthServicer()
        self.port = 0
        self.metrics_port: int | None = None
        self.http_port: int | None = None
        self.serving = False  # what grpc.health says of the whole server; HTTP readiness follows it
        self._http: HttpFront | None = None
        self._server: grpc.aio.Server | None = None
        self._endpoint: MetricsEndpoint | None = None
        self._transport: TransportStats | None = None
        self._drain = DrainInterceptor()
        self.tracing: Tracing | None = None
        self.services = [SENTIMENT_SERVICE.full_name, INFERENCE_SERVICE.full_name]

    def _models_changed(self) -> None:
        """Health follows the registry while serving: NOT_SERVING once no version is loaded (all
        unloaded through the repository API), SERVING again once one is."""
        if not self._following_models:
            return
        serving = self.models is not None and self.models.ready
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        asyncio.get_running_loop().create_task(self._set_health(status))

    @property
    def engine(self) -> Engine | None:
        """The default version's engine (None before start)."""
        if self.models is None or not self.models.default_version:
            return None
        return self.models.default()

    async def _set_health(self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        self.serving = status == health_pb2.HealthCheckResponse.SERVING
        for service in ("", *self.services):
            await self.health.set(service, status)

    async def start(self) -> None:
        """Load and check the model (ModelDirectoryError on failure), listen, warm up, report SERVING."""
        settings = self.settings
        tracing = self.tracing = Tracing.from_env(SERVER_VERSION)

        def build(version: int, batches: BatchObserver, predictions: PredictionObserver | None) -> Engine:
            return build_engine(settings, batches, predictions, tracing, version)

        models = self.models = ModelRegistry(
            build,
            settings.model_dir,
            settings.model_name,
            settings.version_policy(),
            self.metrics,
            PredictionObservers(self.metrics, self.access),
            settings.shadow_share,
            settings.variant.value,
        )
        models.load_at_start()
        models.on_change = self._models_changed
        interceptors: list[grpc.aio.ServerInterceptor] = [
            MetricsInterceptor(self.metrics, self.access),
            self._drain,
        ]
        if tracing is not None:  # outermost: the call's metrics and its access line are inside its span
            tracing.log_ids()
            interceptors.insert(0, TracingInterceptor(tracing))
        if settings.auth_token is not None:
            interceptors.append(AuthInterceptor(settings.auth_token.get_secret_value()))
        before = server_ids()
        server = grpc.aio.server(
            interceptors=interceptors,
            options=transport_options(settings),
        )
        (server_id,) = server_ids() - before
        transport = self._transport = TransportStats(server_id, self.metrics)
        sentiment, inference = SentimentServicer(models), InferenceServicer(models, settings.model_control)
        server.add_generic_rpc_handlers(
            [generic_handler(sentiment, SENTIMENT_SERVICE), generic_handler(inference, INFERENCE_SERVICE)]
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        if settings.reflection:
            names = [
                *self.services,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ]
            reflection.enable_server_reflection(names, server)
        credentials = _credentials(settings)
        if not settings.reuse_port:  # a worker of --workers joins its group's port on purpose
            check_port_free(settings.host, settings.port)
        if credentials is None:
            self.port = server.add_insecure_port(settings.address)
        else:
            self.port = server.add_secure_port(settings.address, credentials)
        if self.port == 0:
            raise StartupError(
                f"--host {settings.host} --port {settings.port}: could not listen there (in use by "
                "another process, or not an address of this machine)"
            )
        self._server = server
        await server.start()
        if settings.http_port >= 0:
            self._http = self._http_front(sentiment, inference)
            await self._http.start()
            self.http_port = self._http.port
        if settings.metrics_port >= 0:
            self._endpoint = MetricsEndpoint(
                self.metrics.registry, settings.metrics_host, settings.metrics_port, settings.metrics_token()
            )
            self.metrics_port = self._endpoint.port
        self.metrics.queue_capacity.set(settings.max_queue_size)
        self.metrics.connections_limit.set(settings.max_connections)
        transport.start()
        await models.start()
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self._following_models = True
        if settings.model_control is ModelControl.POLL:
            self._follow = asyncio.get_running_loop().create_task(models.follow(settings.poll_interval_s))
        log.info(
            "serving %s versions %s (default %d, policy %s, model control %s) on %s:%d (%s, HTTP port %s, "
            "metrics port %s)",
            settings.model_name,
            models.loaded(),
            models.default_version,
            models.policy,
            settings.model_control.value,
            settings.host,
            self.port,
            models.info().provider,
            self.http_port,
            self.metrics_port,
        )

    def _http_front(self, sentiment: SentimentServicer, inference: InferenceServicer) -> HttpFront:
        """The HTTP front door over the same servicers, limits, token, TLS and drain as gRPC."""
        settings = self.settings
        token = None if settings.auth_token is None else settings.auth_token.get_secret_value()
        limits = Limits(
            settings.max_message_bytes,
            settings.http_read_timeout_s,
            8 * settings.max_texts_per_request + 4096,
            tuple(name.strip().lower() for name in settings.http_allowed_hosts.split(",") if name.strip()),
        )
        front = Front(sentiment, inference, self.metrics, self._drain, limits, token, lambda: self.serving)
        # a worker joins its group's port; any other bind fails beside a listener (check_port_free)
        option = socket.SO_REUSEPORT if settings.reuse_port else socket.SO_REUSEADDR
        sock = bind(settings.host, settings.http_port, option, "--http-port")
        sock.listen(2048)
        sock.setblocking(False)
        # the protocol counts connections itself: idle ones make room rather than lock callers out
        config: dict[str, object] = {"timeout_keep_alive": settings.http_keepalive_timeout_s}
        if settings.tls_cert_file is not None and settings.tls_key_file is not None:
            config.update(ssl_certfile=str(settings.tls_cert_file), ssl_keyfile=str(settings.tls_key_file))
            if settings.tls_client_ca_file is not None:
                config.update(ssl_ca_certs=str(settings.tls_client_ca_file), ssl_cert_reqs=ssl.CERT_REQUIRED)
        refusals = self.metrics.http_refusals
        head = {
            "max_head_bytes": settings.max_metadata_bytes,
            "head_timeout_s": settings.handshake_timeout_s,
            "idle_timeout_s": float(settings.http_keepalive_timeout_s),
            "max_connections": settings.max_connections,
            "refused": staticmethod(lambda reason: refusals.labels(reason).inc()),
        }
        return HttpFront(build_app(front, self.access, self.tracing), sock, config, head)

    async def stop(self, grace_s: float | None = None) -> None:
        """Drain: NOT_SERVING, refuse new calls (UNAVAILABLE), answer accepted ones, then stop.

        With a drain delay, calls are still answered for that long after health turns NOT_SERVING,
        so that balancers polling health stop sending calls here before they would be refused.
        Then new calls are refused by the engine while the gRPC server still runs, so each is
        answered UNAVAILABLE (safe to retry elsewhere) instead of being cut off by the transport, and
        open streams are closed with UNAVAILABLE once their accepted requests are answered.
        """
        grace = self.settings.grace_period_s if grace_s is None else grace_s
        self._following_models = False  # draining: health stays NOT_SERVING whatever is loaded
        deadline = asyncio.get_running_loop().time() + grace
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        if self.settings.drain_delay_s > 0:
            log.info(
                "NOT_SERVING; still answering for %.1f s while balancers notice", self.settings.drain_delay_s
            )
            await asyncio.sleep(min(self.settings.drain_delay_s, grace))
        if self._follow is not None:
            self._follow.cancel()
        if self.models is not None:
            self.models.stop_accepting()
        try:
            async with asyncio.timeout_at(deadline):
                await self._drain.wait_idle()
        except TimeoutError:
            log.warning("accepted calls still running after the %.1f s grace period", grace)
        self._drain.end_watches()  # health watchers would otherwise hold shutdown open
        if self._http is not None:
            await self._http.stop()
        if self._server is not None:
            await self._server.stop(max(0.0, deadline - asyncio.get_running_loop().time()))
        if self._transport is not None:
            await self._transport.stop()
        if self.models is not None:
            await self.models.stop()
        if self._endpoint is not None:
            self._endpoint.close()
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)  # sends the spans still buffered
        log.info("stopped; calls answered: %s", json.dumps(self.metrics.answered(), sort_keys=True))
