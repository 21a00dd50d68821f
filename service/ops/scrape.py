"""The HTTP endpoint Prometheus scrapes: the metrics registry in the text format, in a daemon thread,
behind the bearer token when one is set (--metrics-token)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterable
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

from service.ops.auth import bearer_refusal

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a scraper that hangs never holds shutdown

    def get_request(self) -> tuple[socket.socket, Any]:
        """An accepted scrape with TCP_NODELAY: the answer's head and body are written apart, and
        the body would otherwise wait on the scraper's delayed acknowledgement."""
        conn, address = super().get_request()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, address


class _ThreadingWSGIServer6(_ThreadingWSGIServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not worth a log line each."""


def _guarded(app: WSGIApplication, token: str) -> WSGIApplication:
    """`app` behind the bearer token: 401 with a short reason otherwise."""
    expected = token.encode()

    def guarded(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        given = [environ["HTTP_AUTHORIZATION"]] if "HTTP_AUTHORIZATION" in environ else []
        refusal = bearer_refusal(given, expected)
        if refusal is None:
            return app(environ, start_response)
        headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("WWW-Authenticate", 'Bearer realm="metrics"'),
        ]
        start_response("401 Unauthorized", headers)
        return [f"{refusal}\n".encode()]

    return guarded


class MetricsEndpoint:
    """Prometheus text format over HTTP, in a daemon thread; behind the bearer token when one is given."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int, token: str | None = None) -> None:
        app: WSGIApplication = make_wsgi_app(registry)
        if token is not None:
            app = _guarded(app, token)
        server_class = _ThreadingWSGIServer6 if ":" in host else _ThreadingWSGIServer
        self._server = make_server(host, port, app, server_class, handler_class=_QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)
        self._thread.start()
        self.port: int = self._server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
