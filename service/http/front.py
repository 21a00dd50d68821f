"""The HTTP front door: uvicorn on the gRPC server's own event loop, with limits on what a caller may
send before the application sees a request.

The application bounds the body (size before reading, time while reading); this protocol bounds
everything before it (BoundedHead): idle connections, how many there are, and each request's head.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
import socket
import ssl
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.utils import is_ssl

from service.ops.sockets import bind

if TYPE_CHECKING:
    from service.ops.settings import Settings

log = logging.getLogger(__name__)


CODES = {400: "INVALID_ARGUMENT", 408: "DEADLINE_EXCEEDED", 431: "RESOURCE_EXHAUSTED", 503: "UNAVAILABLE"}


def _refuse(transport: asyncio.BaseTransport, status: int, message: str) -> None:
    """Answer `status` with the endpoints' JSON error and close the connection once it is sent."""
    body = json.dumps({"error": message, "code": CODES[status]}).encode()
    assert isinstance(transport, asyncio.WriteTransport)
    transport.write(
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
        + body
    )
    transport.close()


def _drop(transport: asyncio.BaseTransport) -> None:
    """Close a connection now: its unsent answers are dropped (a caller that does not read them would
    otherwise hold it open)."""
    if isinstance(transport, asyncio.WriteTransport) and transport.get_write_buffer_size():
        transport.abort()
    else:
        transport.close()


class _Refused(Exception):
    """Raised from a parser callback to stop reading a request that is refused."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


class BoundedHead(HttpToolsProtocol):
    """uvicorn's httptools protocol with the connection-level limits of the HTTP door.

    - Idle: a connection that has sent no request for `idle_timeout_s` is closed, a new one included
      (uvicorn times only the wait after an answer), and its unread answers are dropped.
    - Connections: past `max_connections` the connection idle the longest is closed to make room; only
      when every connection is in a request is the new one refused (503). Idle sockets can never
      lock callers out.
    - Head: each request's request line and headers must arrive within `head_timeout_s` of its first
      byte (408) and be at most `max_head_bytes` (431); pipelined requests each have their own.
    - A request the parser refuses (bad bytes, a URL it cannot read) gets 400, not silence.
    - A caller that half-closes after a complete request gets its answer, then the connection ends;
      one that closed is told apart by a probe (_probe), and its connection dropped.
    """

    max_head_bytes = 16 * 1024
    head_timeout_s = 10.0
    idle_timeout_s = 30.0
    max_connections = 1000

    @staticmethod
    def refused(reason: str) -> None:
        """Called with a reason (service/ops/metrics.py, HTTP_REFUSALS) each time the door refuses or
        closes a connection."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_keep_alive = self.idle_timeout_s  # type: ignore[assignment]
        self._in_head = False  # between a request's first byte and the end of its headers
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self.idle_since: float | None = None  # loop time since when no request is in progress

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._become_idle()
        if len(self.connections) > self.max_connections and not self._make_room():
            self.refused("over_limit")
            message = f"every one of the {self.max_connections} connections is busy (--max-connections)"
            _refuse(transport, 503, message)

    def _make_room(self) -> bool:
        """Close the connection (other than this one) idle the longest; False when none is idle."""
        open_ = [c for c in self.connections if not c.transport.is_closing()]
        if len(open_) <= self.max_connections:
            return True  # room was made for an earlier one and is not given back yet
        idle = [c for c in open_ if c is not self and isinstance(c, BoundedHead) and c.idle_since is not None]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c.idle_since or 0.0)
        oldest.idle_since = None
        self.refused("evicted")
        _drop(oldest.transport)
        return True

    def _become_idle(self) -> None:
        self.idle_since = self.loop.time()
        self._unset_keepalive_if_required()
        expire = self.timeout_keep_alive_handler
        self.timeout_keep_alive_task = self.loop.call_later(self.idle_timeout_s, expire)

    def timeout_keep_alive_handler(self) -> None:
        if not self.transport.is_closing():
            self.refused("idle_timeout")
            _drop(self.transport)

    def on_response_complete(self) -> None:
        waiting = bool(self.pipeline) or self._in_head  # the next request is here or on its way
        super().on_response_complete()
        if self.transport.is_closing():
            return
        if waiting:
            self._unset_keepalive_if_required()  # the head timer times the next request
            if self._in_head:
                self._start_head_timer()
        else:
            self._become_idle()

    def data_received(self, data: bytes) -> None:
        # the idle timer runs on: bytes that start no request (blank lines) do not keep a connection
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as err:
            self._end_head()
            refusal = err.__context__
            if isinstance(refusal, _Refused):
                self.refused(refusal.reason)
                _refuse(self.transport, refusal.status, refusal.message)
            else:  # the parser took the bytes, but uvicorn could not read them (a CONNECT target)
                self._bad_request("the request line is not a URL path this server serves")
        except httptools.HttpParserUpgrade:
            self._end_head()
            self._bad_request("protocol upgrades are not served here")
        except httptools.HttpParserError:
            self._end_head()
            self._bad_request("the request is not valid HTTP/1.1")

    def _bad_request(self, message: str) -> None:
        self.refused("bad_request")
        _refuse(self.transport, 400, message)

    def eof_received(self) -> bool | None:  # type: ignore[override]
        """The caller sent all it will send: answer the requests it completed, then close."""
        last = self.pipeline[0][0] if self.pipeline else self.cycle
        if last is None or last.response_complete or last.more_body or self._in_head:
            return None  # nothing whole is waiting for an answer: close now
        last.keep_alive = False
        cycle = self.cycle
        if cycle is not None and not cycle.response_started and not is_ssl(self.transport):
            if cycle.scope["http_version"] == "1.1":  # no 1xx to an HTTP/1.0 caller
                self._probe(cycle)
        return True

    def _probe(self, cycle: RequestResponseCycle) -> None:
        """A caller that half-closed and waits for its answer, and one that closed and left, both send
        just a FIN; only data tells them apart. An interim `100 Continue` (which every HTTP/1.1 client
        reads past) draws a reset from a socket that was closed, and a reset drops the connection, so
        that the work of an endpoint that watches for callers who leave stops."""
        self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock = self.transport.get_extra_info("socket")

        def check(delay_s: float) -> None:
            if self.transport.is_closing() or cycle.response_complete:
                return
            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):  # reset: nobody is there
                _drop(self.transport)
                return
            self.loop.call_later(delay_s, check, min(2 * delay_s, 1.0))

        # the reset comes within a round trip; checked at once and then less and less often
        self.loop.call_later(0.005, check, 0.02)

    def on_message_begin(self) -> None:
        self.idle_since = None
        self._unset_keepalive_if_required()
        self._in_head, self._head_bytes = True, 0
        if self.cycle is None or self.cycle.response_complete:  # else timed once the answer is out
            self._start_head_timer()
        super().on_message_begin()

    def _start_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_too_slow)

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.max_head_bytes:
            message = (
                f"the request line and headers exceed {self.max_head_bytes} bytes (--max-metadata-bytes)"
            )
            raise _Refused(431, "head_too_large", message)

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._end_head()
        # the stream endpoint drops a connection whose caller stopped reading its answers
        transport = self.transport
        self.scope["state"]["drop"] = lambda: _drop(transport)
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_head()
        self.idle_since = None
        super().connection_lost(exc)

    def _end_head(self) -> None:
        self._in_head = False
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self._in_head = False
            self.refused("head_timeout")
            _refuse(
                self.transport,
                408,
                f"the request line and headers did not arrive within {self.head_timeout_s:g} s",
            )


class HttpFront:
    """uvicorn serving `app` on an already bound socket, inside the running event loop (no signal
    handlers of its own: the server's SIGTERM drains both front doors)."""

    def __init__(self, app: Any, sock: socket.socket, config: dict[str, Any], head: dict[str, Any]) -> None:
        protocol = type("Protocol", (BoundedHead,), head)
        self._config = uvicorn.Config(
            app,
            http=protocol,
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            **config,  # fmt: skip
        )
        self._server = uvicorn.Server(self._config)
        self._sock = sock
        self._loop_task: asyncio.Task[None] | None = None
        self.port: int = sock.getsockname()[1]

    async def start(self) -> None:
        self._config.load()
        self._server.lifespan = self._config.lifespan_class(self._config)
        await self._server.startup(sockets=[self._sock])
        self._loop_task = asyncio.create_task(self._server.main_loop(), name="http-front")

    async def stop(self) -> None:
        """Close the listener and idle connections; wait for answers being sent."""
        self._server.should_exit = True
        if self._loop_task is not None:
            await self._loop_task
        await self._server.shutdown(sockets=[self._sock])


def http_door(settings: Settings, app: Any, refused: Callable[[str], None]) -> HttpFront:
    """The HTTP door where the settings say, under the same connection limits, head limits and TLS as
    gRPC; refused(reason) counts each connection or request refused at this level."""
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
    head = {
        "max_head_bytes": settings.max_metadata_bytes,
        "head_timeout_s": settings.handshake_timeout_s,
        "idle_timeout_s": float(settings.http_keepalive_timeout_s),
        "max_connections": settings.max_connections,
        "refused": staticmethod(refused),
    }
    return HttpFront(app, sock, config, head)
