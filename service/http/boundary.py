"""Where HTTP requests meet the calls: each endpoint behind the token and the browser checks, its
errors answered through the one table (calls/status.py), its work stopped when the caller hangs up,
and the name of the call it stands for and the code it got left for the call observer."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from service.calls.status import INTERNAL, INTERNAL_MESSAGE, status_of
from service.core.errors import Forbidden, ServiceError, Unauthenticated, quoted
from service.http.answers import ErrorShape, error_response, own_error
from service.http.bodies import Limits, header
from service.ops.auth import bearer_refusal

log = logging.getLogger(__name__)

Handler = Callable[[Request], Awaitable[Response]]


def host_name(host: str) -> str:
    """A Host header's name, without its port or an IPv6 address's brackets, in lower case."""
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return name.strip("[]").lower()


def local_host(name: str) -> bool:
    """Whether a host name is an IP address or localhost: names no one else can point at this server
    (DNS rebinding needs a name)."""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class Boundary:
    """Makes endpoints of handlers (endpoint()); one per HTTP door."""

    def __init__(self, limits: Limits, token: str | None) -> None:
        self.limits = limits
        self._token = None if token is None else token.encode()

    def endpoint(
        self,
        rpc: str,
        handler: Handler,
        open_: bool = False,
        watch: bool = False,
        changes: bool = False,
        shape: ErrorShape = own_error,
    ) -> Handler:
        """`handler` behind the token (unless open_), with its errors answered by the status table in
        the API's error `shape`; the request is counted as `rpc` with the status code it got. A
        browser may POST only from this server's own pages, and, to an endpoint that `changes` what
        is served, only under a Host name it knows. watch: the work stops when the caller hangs up."""

        async def answer(request: Request) -> Response:
            state = request.scope["state"]
            state["rpc"] = rpc
            try:
                if request.method == "POST":
                    self.check_browser(request, changes)
                if not open_ and self._token is not None:
                    refusal = bearer_refusal(request.headers.getlist("authorization"), self._token)
                    if refusal is not None:
                        raise Unauthenticated(refusal)
                response = await (self._watched(request, handler) if watch else handler(request))
            except ServiceError as err:
                state["code"] = status_of(err).grpc.name
                unread = request.method == "POST" and "body" not in state
                if unread:
                    await self._discard(request)
                return error_response(err, close=unread, shape=shape)
            except HTTPException:
                raise
            except ClientDisconnect:
                state["code"] = "CANCELLED"
                return Response(status_code=499)  # nobody reads it
            except Exception:
                log.exception("unexpected error in %s over HTTP", rpc)
                state["code"] = "INTERNAL"
                return JSONResponse(shape(INTERNAL_MESSAGE, INTERNAL), 500)
            state["code"] = "OK"
            return response

        return answer

    async def _discard(self, request: Request) -> None:
        """Read and drop what the caller still sends of a body that is refused (for at most 5 s and
        four times the body limit): the connection then closes with nothing left unread, so the
        caller is not reset before it reads its answer (a lingering close, as nginx does)."""
        cap, seen = 4 * self.limits.max_body_bytes, 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(self.limits.read_timeout_s, 5.0)):
                while seen <= cap:
                    message = await request.receive()
                    seen += len(message.get("body", b""))
                    if message["type"] != "http.request" or not message.get("more_body", False):
                        return

    def check_browser(self, request: Request, changes: bool) -> None:
        """Forbidden for a browser's POST from another site's page (which a page may send without
        asking: a form, or fetch with no-cors), and for one that `changes` what is served under a Host
        name that is not this machine's address nor in --http-allowed-hosts (a name an attacker can
        point at this server: DNS rebinding). Callers other than browsers send no Origin."""
        origin = header(request, "origin")
        site = header(request, "sec-fetch-site")
        if origin is None and site is None:
            return
        host = header(request, "host") or ""
        same = site in (None, "same-origin", "none") and (
            origin is None or urlsplit(origin).netloc.lower() == host.lower()
        )
        if not same:
            raise Forbidden(
                f"a browser request from another site ({quoted(origin or site)}) is refused: this server "
                "takes POSTs from its own pages only"
            )
        allowed, name = self.limits.allowed_hosts, host_name(host)
        if changes and not (local_host(name) or "*" in allowed or name in allowed):
            raise Forbidden(
                f"a browser may change the served models only under this machine's address or a name in "
                f"--http-allowed-hosts, not Host {quoted(host)}"
            )

    async def _watched(self, request: Request, handler: Handler) -> Response:
        """handler(request), cancelled (its queued texts dropped) when the caller hangs up once its
        body is read, as gRPC cancels a call whose caller went away."""
        work = asyncio.ensure_future(handler(request))
        gone = asyncio.ensure_future(self._hung_up(request))
        try:
            await asyncio.wait((work, gone), return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not work.done():
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError, ServiceError):
                    await work
        if work.cancelled():
            raise ClientDisconnect()
        return work.result()

    @staticmethod
    async def _hung_up(request: Request) -> None:
        """Returns once the caller has closed its connection, after its body was read (a caller that
        only half-closed is waiting for its answer: http/front.py tells the two apart)."""
        await request.scope["state"].setdefault("body_read", asyncio.Event()).wait()
        while (await request.receive())["type"] != "http.disconnect":
            pass
