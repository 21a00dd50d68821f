"""What the HTTP door sends back: JSON answers within the message limit (a large one rendered off the
event loop), and NDJSON streams sent line by line."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from starlette.responses import JSONResponse, Response
from starlette.types import Message as AsgiMessage
from starlette.types import Receive, Scope, Send

from service.calls.status import Status, status_of
from service.core.errors import InvalidInput, QueueFull, ServiceError, Unauthenticated

log = logging.getLogger(__name__)

NDJSON = "application/x-ndjson"


ErrorShape = Callable[[str, Status], Any]  # an API's error body from the message and status


def own_error(message: str, status: Status) -> dict[str, str]:
    """This server's error body (sentiment.v1 and KServe v2 over HTTP)."""
    return {"error": message, "code": status.grpc.name}


def error_response(err: ServiceError, close: bool = False, shape: ErrorShape = own_error) -> JSONResponse:
    """The error's status and message, in the API's `shape`; close: the request's body was not read,
    so the connection cannot carry another request (its unread bytes would be taken for one)."""
    status = status_of(err)
    headers = {"Retry-After": "1"} if isinstance(err, QueueFull) else {}
    if close:
        headers["Connection"] = "close"
    if isinstance(err, Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="sentiment"'
    return JSONResponse(shape(err.message, status), status.http, headers)


def check_answer(size: int, limit: int) -> None:
    """The last guard before sending: an answer over --max-message-bytes is refused, over HTTP as over
    gRPC (the size check before the work should have caught it)."""
    if size > limit:
        raise InvalidInput(
            f"the answer takes {size / 2**20:.1f} MiB in JSON; the message limit is {limit / 2**20:.1f} "
            "MiB (--max-message-bytes): send fewer texts per request, or ask for less attention"
        )


async def json_bytes(message: Message, heavy: bool = False) -> bytes:
    """A message in protobuf's JSON mapping, fields at their defaults included; a heavy one is rendered
    in a worker thread, off the event loop."""

    def render() -> bytes:
        value = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
        return json.dumps(value, separators=(",", ":")).encode()

    return await asyncio.to_thread(render) if heavy else render()


async def json_answer(message: Message, limit: int, heavy: bool = False) -> Response:
    body = await json_bytes(message, heavy)
    check_answer(len(body), limit)
    return Response(body, media_type="application/json")


async def close_stream(stream: AsyncIterator[Any]) -> None:
    """Stop a stream of answers now (an async generator's aclose): the requests still running for it
    are cancelled."""
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()


class Lines(Response):
    """An NDJSON answer sent line by line as it is made. Unlike starlette's StreamingResponse it does
    not read the request while answering, so the request's own lines reach the endpoint. A caller
    that stops reading its answers for `stall_s` loses its connection (the answers it left would
    otherwise hold it, and the work behind them, forever)."""

    media_type = NDJSON

    def __init__(self, lines: AsyncIterator[bytes], stall_s: float, stalled: Callable[[], None]) -> None:
        super().__init__(None, 200)
        del self.headers["content-length"]
        self._lines = lines
        self._stall_s = stall_s
        self._stalled = stalled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def sent(message: AsgiMessage) -> None:
            async with asyncio.timeout(self._stall_s):
                await send(message)

        try:
            await sent(
                {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
            )
            async for line in self._lines:
                await sent({"type": "http.response.body", "body": line, "more_body": True})
            await sent({"type": "http.response.body", "body": b"", "more_body": False})
        except TimeoutError:
            log.info("dropped a stream whose caller read nothing for %g s", self._stall_s)
            self._stalled()
            scope["state"]["drop"]()
            await close_stream(self._lines)
            while (await receive())["type"] != "http.disconnect":  # until the transport says so
                pass
