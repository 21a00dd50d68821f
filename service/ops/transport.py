"""What gRPC's transport did that the service's own code never sees, read from channelz.

Calls that the transport refuses before any handler runs (metadata or a message over the limit, a
stream cut by a protocol error) appear in channelz's call counters but in no interceptor, so the
difference between `sentiment_transport_calls_total{outcome="started"}` and
`sentiment_requests_total` is what the transport turned away. Connections are those that finished
the HTTP/2 handshake: half-open ones and those beyond --max-connections are closed by gRPC core
before channelz lists them, so the gauge shows how close the server is to its limit, not the refusals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, cast

import grpc
from grpc_channelz.v1 import channelz, channelz_pb2

if TYPE_CHECKING:
    from service.ops.metrics import Metrics

log = logging.getLogger(__name__)

POLL_S = 1.0  # metrics lag channelz by at most this; each poll reads a few hundred bytes per connection
_PAGE = 500


class _NoContext:
    """channelz's servicer methods want a context only to report their own errors."""

    def set_code(self, code: grpc.StatusCode) -> None:
        raise RuntimeError(f"channelz: {code}")

    def set_details(self, details: str) -> None:
        pass


_CONTEXT = cast(grpc.ServicerContext, _NoContext())


def server_ids() -> set[int]:
    """Ids of the gRPC servers this process has created."""
    ids: set[int] = set()
    start = 0
    while True:
        page = channelz.ChannelzServicer.GetServers(
            channelz_pb2.GetServersRequest(start_server_id=start), _CONTEXT
        )
        ids.update(s.ref.server_id for s in page.server)
        if page.end or not page.server:
            return ids
        start = max(ids) + 1


class TransportStats:
    """Copies one gRPC server's channelz counters into the service's metrics every POLL_S.

    The server is named by its channelz id: take server_ids() before creating it and after, in the
    same thread (gRPC creates the node in the constructor), and the new id is the one.
    """

    def __init__(self, server_id: int, metrics: Metrics) -> None:
        self.server_id = server_id
        self._metrics = metrics
        self._seen = {"started": 0, "succeeded": 0, "failed": 0}
        self._task: asyncio.Task[None] | None = None

    def poll(self) -> None:
        data = channelz.ChannelzServicer.GetServer(
            channelz_pb2.GetServerRequest(server_id=self.server_id), _CONTEXT
        ).server.data
        now = {"started": data.calls_started, "succeeded": data.calls_succeeded, "failed": data.calls_failed}
        for outcome, total in now.items():
            if total > self._seen[outcome]:
                self._metrics.transport_calls.labels(outcome).inc(total - self._seen[outcome])
                self._seen[outcome] = total
        self._metrics.connections.set(self.connections())

    def connections(self) -> int:
        count, start = 0, 0
        while True:
            page = channelz.ChannelzServicer.GetServerSockets(
                channelz_pb2.GetServerSocketsRequest(
                    server_id=self.server_id, start_socket_id=start, max_results=_PAGE
                ),
                _CONTEXT,
            )
            count += len(page.socket_ref)
            if page.end or not page.socket_ref:
                return count
            start = max(ref.socket_id for ref in page.socket_ref) + 1

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                self.poll()
            except RuntimeError as err:  # the server is gone, or channelz is off; nothing to show
                log.warning("transport metrics stopped: %s", err)
                return
            await asyncio.sleep(POLL_S)

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        with contextlib.suppress(RuntimeError):
            self.poll()  # the last calls before the stop are counted too
