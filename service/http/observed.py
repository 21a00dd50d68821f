"""Every HTTP request through the call observer (calls/observe.py), as the gRPC door's calls are:
counted and timed under the name of the call it stands for, held in the drain until its answer is
sent (a streamed answer included), in the access log, and in a span named by method and route."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage

from service.calls.observe import CARRIED, CallObserver

# probes and the page's files: most of the requests, and nothing to explain
UNTRACED = frozenset({"/v2/health/live", "/v2/health/ready", "/", "/openapi.json"})


def peer_of(client: tuple[str, int] | None) -> str:
    """An HTTP caller's address written as gRPC writes a peer (ipv4:host:port, ipv6:[host]:port)."""
    if not client:
        return "unknown"
    host, port = client
    return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"


class Observed:
    """The app, each request observed from its head to its answer's last byte."""

    def __init__(self, app: ASGIApp, observer: CallObserver) -> None:
        self.app = app
        self.observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        path = scope["path"]
        traced = (
            self.observer.tracing is not None and path not in UNTRACED and not path.startswith("/static/")
        )

        def peer() -> str:
            return peer_of(scope.get("client"))

        if traced:
            carrier = {}
            for key, value in scope["headers"]:
                name = key.decode("latin-1").lower()
                if name in CARRIED:
                    carrier[name] = value.decode("latin-1")
            attributes = {"http.request.method": scope["method"], "url.path": path}
            opened = self.observer.begin("http", peer, scope["method"], carrier, attributes)
        else:
            opened = self.observer.begin("http", peer)
        status = 0

        async def sent(message: AsgiMessage) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent if traced else send)
        finally:
            rpc = state.get("rpc", "http/unrouted")  # a path or method no endpoint serves
            code = state.get("code", "NOT_FOUND")
            if not traced:
                self.observer.end(opened, rpc, code)
            else:
                route = scope.get("route")
                done = {"http.response.status_code": status, "rpc.method": rpc}
                if route is not None:
                    done["http.route"] = route.path
                name = f"{scope['method']} {route.path}" if route is not None else None
                self.observer.end(opened, rpc, code, done, span_name=name)
