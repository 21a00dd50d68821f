"""The process: the model versions, the call layer, both doors (gRPC and HTTP), health, the metrics
endpoint and tracing, started in order and drained in order."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2

from service.calls.infer import SERVER_VERSION
from service.calls.layer import Calls
from service.calls.observe import CallObserver, Drain
from service.core.results import PredictionObserver, PredictionObservers
from service.grpc.server import SERVICES, build_server, listen
from service.http.app import build_app
from service.http.bodies import Limits
from service.http.front import HttpFront, http_door
from service.ops.access import AccessLog
from service.ops.metrics import Metrics
from service.ops.scrape import MetricsEndpoint
from service.ops.settings import ModelControl, Settings
from service.ops.tracing import Tracing
from service.ops.transport import TransportStats, server_ids
from service.versions.assembly import EngineObserver, build_engine
from service.versions.changes import VersionChanges
from service.versions.registry import ModelRegistry

if TYPE_CHECKING:
    from service.core.engine import Engine

log = logging.getLogger(__name__)


class Server:
    """The whole service in one process; start() loads the model first and fails fast."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.access = AccessLog(settings.access_log_sample, settings.access_log_texts)
        self.models: ModelRegistry | None = None
        self.changes: VersionChanges | None = None
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
        self._drain = Drain()
        self.tracing: Tracing | None = None

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
        for service in ("", *SERVICES):
            await self.health.set(service, status)

    async def start(self) -> None:
        """Load and check the model (ModelDirectoryError on failure), listen, warm up, report SERVING."""
        settings = self.settings
        tracing = self.tracing = Tracing.from_env(SERVER_VERSION)

        def build(version: int, batches: EngineObserver, predictions: PredictionObserver | None) -> Engine:
            return build_engine(settings, batches, predictions, tracing, version)

        models = self.models = ModelRegistry(
            settings.model_dir,
            settings.model_name,
            self.metrics,
            PredictionObservers(self.metrics, self.access),
            settings.shadow_share,
        )
        changes = self.changes = VersionChanges(models, build, settings.version_policy())
        changes.load_at_start()
        models.on_change = self._models_changed
        observer = CallObserver(self.metrics, self._drain, self.access, tracing)
        if tracing is not None:
            tracing.log_ids()
        calls = Calls.over(changes, settings.model_control, observer)
        before = server_ids()
        server = build_server(settings, calls, self.health)
        (server_id,) = server_ids() - before
        transport = self._transport = TransportStats(server_id, self.metrics)
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.port = listen(server, settings)
        self._server = server
        await server.start()
        if settings.http_port >= 0:
            self._http = self._http_door(calls)
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
        await changes.start()
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self._following_models = True
        if settings.model_control is ModelControl.POLL:
            self._follow = asyncio.get_running_loop().create_task(changes.follow(settings.poll_interval_s))
        log.info(
            "serving %s versions %s (default %d, policy %s, model control %s) on %s:%d (%s, HTTP port %s, "
            "metrics port %s)",
            settings.model_name,
            models.loaded(),
            models.default_version,
            changes.policy,
            settings.model_control.value,
            settings.host,
            self.port,
            models.info().provider,
            self.http_port,
            self.metrics_port,
        )

    def _http_door(self, calls: Calls) -> HttpFront:
        """The HTTP door over the same calls, limits, token, TLS and drain as gRPC."""
        settings = self.settings
        token = None if settings.auth_token is None else settings.auth_token.get_secret_value()
        limits = Limits(
            settings.max_message_bytes,
            settings.http_read_timeout_s,
            8 * settings.max_texts_per_request + 4096,
            tuple(name.strip().lower() for name in settings.http_allowed_hosts.split(",") if name.strip()),
        )
        app = build_app(calls, limits, token, lambda: self.serving)
        refusals = self.metrics.http_refusals
        return http_door(settings, app, lambda reason: refusals.labels(reason).inc())

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
        self._drain.close()  # health watchers would otherwise hold shutdown open
        if self._http is not None:
            await self._http.stop()
        if self._server is not None:
            await self._server.stop(max(0.0, deadline - asyncio.get_running_loop().time()))
        if self._transport is not None:
            await self._transport.stop()
        if self.changes is not None:
            await self.changes.stop()
        if self._endpoint is not None:
            self._endpoint.close()
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)  # sends the spans still buffered
        log.info("stopped; calls answered: %s", json.dumps(self.metrics.answered(), sort_keys=True))
