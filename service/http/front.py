"""The HTTP front door: uvicorn on the gRPC server's own event loop, with limits on what a caller may
send before the application sees a request.

uvicorn bounds the time between requests on a keep-alive connection, and the application bounds the
body (size before reading, time while reading); this protocol adds the two bounds uvicorn leaves
out: a request's head (request line and headers) must arrive within `head_timeout_s`, else 408, and
be at most `max_head_bytes`, else 431. Both refusals close the connection.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)


def _refuse(transport: asyncio.Transport, status: int, reason: str, message: str) -> None:
    body = f'{{"error":"{message}"}}'.encode()
    transport.write(
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        "connection: close\r\n\r\n".encode()
        + body
    )
    transport.close()


class _Refused(Exception):
    """Raised from a parser callback to stop reading a request that is refused."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


class BoundedHead(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a size limit on each request's head."""

    max_head_bytes = 16 * 1024
    head_timeout_s = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False  # between a request's first byte and the end of its headers
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        if not self._in_head and (self.cycle is None or self.cycle.response_complete):
            self._in_head, self._head_bytes = True, 0  # a new request starts with these bytes
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_too_slow)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as err:
            if not isinstance(err.__context__, _Refused):
                raise
            self._end_head()
            refusal = err.__context__
            _refuse(self.transport, refusal.status, refusal.reason, refusal.message)
        except httptools.HttpParserError:
            self._end_head()
            _refuse(self.transport, 400, "Bad Request", "the request is not valid HTTP/1.1")
        except httptools.HttpParserUpgrade:
            self._end_head()
            _refuse(self.transport, 400, "Bad Request", "protocol upgrades are not served here")

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.max_head_bytes:
            message = (
                f"the request line and headers exceed {self.max_head_bytes} bytes (--max-metadata-bytes)"
            )
            raise _Refused(431, "Request Header Fields Too Large", message)

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._end_head()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._end_head()
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
            _refuse(
                self.transport,
                408,
                "Request Timeout",
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
