"""The HTTP endpoints: the service's own API (protobuf's JSON mapping of sentiment.v1), KServe v2 over
HTTP, the OpenAPI document and the playground page.

Each endpoint is a boundary like the gRPC servicers and calls the same servicer methods, so
validation and limits exist once; service/calls/status.py maps the same errors to HTTP statuses. Every
request is counted in the same metrics as gRPC calls (label protocol="http"), under the name of the
gRPC method it stands for, and holds the server's drain open until its answer is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from google.protobuf import json_format
from google.protobuf.message import Message
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage

from model_contract import version_number
from sentiment_client.pb.inference import grpc_predict_v2_pb2 as inference_pb
from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from service.calls import repository
from service.calls.status import status_of
from service.core.errors import (
    Forbidden,
    InvalidInput,
    PayloadTooLarge,
    QueueFull,
    ReadTimeout,
    ServiceError,
    Unauthenticated,
    UnsupportedMediaType,
    quoted,
)
from service.grpc.boundary import INTERNAL_MESSAGE, Malformed
from service.grpc.inference import InferenceServicer, server_metadata
from service.grpc.interceptors import CARRIED, DrainInterceptor
from service.grpc.sentiment import SentimentServicer
from service.http import kserve
from service.http.bodies import SMALL_BODY_BYTES, parse_json
from service.http.openapi import openapi_document
from service.ops.access import AccessLog
from service.ops.auth import bearer_refusal
from service.ops.metrics import Metrics

if TYPE_CHECKING:
    from service.ops.tracing import Tracing

log = logging.getLogger(__name__)
T = TypeVar("T")

SENTIMENT = "sentiment.v1.SentimentService/"
INFERENCE = "inference.GRPCInferenceService/"
NDJSON = "application/x-ndjson"
JSON_TYPES = ("application/json", NDJSON)
PAGE_SECURITY = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'"
# probes and the page's files: most of the requests, and nothing to explain
UNTRACED = frozenset({"/v2/health/live", "/v2/health/ready", "/", "/openapi.json"})
STATIC = {
    "playground.js": "text/javascript; charset=utf-8",
    "playground.css": "text/css; charset=utf-8",
}


@dataclass(frozen=True)
class Limits:
    """What an HTTP caller may send and be sent: a body's bytes (before it is read; an answer's too),
    how long it may take (a stream: each line; and each answer line to be read), how many JSON
    values it may hold, and the Host names a browser may reach the repository endpoints under."""

    max_body_bytes: int
    read_timeout_s: float
    max_json_values: int
    allowed_hosts: tuple[str, ...]


def header(request: Request, name: str) -> str | None:
    """A header that may be given once, as the caller wrote it (UTF-8, not read as Latin-1), or None;
    InvalidInput when it is given more than once."""
    values = request.headers.getlist(name)
    if len(values) > 1:
        raise InvalidInput(f"the header {name} is given {len(values)} times; send it once")
    return values[0].encode("latin-1").decode("utf-8", "replace") if values else None


def host_name(host: str) -> str:
    """A Host header's name, without its port or an IPv6 address's brackets, in lower case."""
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return name.strip("[]").lower()


def local_host(name: str) -> bool:
    """Whether a host name is an IP address or localhost: names no one else can point at this
    server (DNS rebinding needs a name)."""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class Lines(Response):
    """An NDJSON answer sent line by line as it is made. Unlike starlette's StreamingResponse it
    does not read the request while answering, so the request's own lines reach the endpoint. A
    caller that stops reading its answers for `stall_s` loses its connection (the answers it left
    would otherwise hold it, and the work behind them, forever)."""

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


async def close_stream(stream: AsyncIterator[Any]) -> None:
    """Stop a stream of answers now (an async generator's aclose): the requests still running for
    it are cancelled."""
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()


def error_response(err: ServiceError, close: bool = False) -> JSONResponse:
    """The error's status and message; close: the request's body was not read, so the connection
    cannot carry another request (its unread bytes would be taken for one)."""
    status = status_of(err)
    headers = {"Retry-After": "1"} if isinstance(err, QueueFull) else {}
    if close:
        headers["Connection"] = "close"
    if isinstance(err, Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="sentiment"'
    return JSONResponse({"error": err.message, "code": status.grpc.name}, status.http, headers)


class Front:
    """The endpoints, over the servicers the gRPC server also serves."""

    def __init__(
        self,
        sentiment: SentimentServicer,
        inference: InferenceServicer,
        metrics: Metrics,
        drain: DrainInterceptor,
        limits: Limits,
        token: str | None,
        serving: Callable[[], bool],
    ) -> None:
        self.sentiment = sentiment
        self.inference = inference
        self.metrics = metrics
        self.drain = drain
        self.limits = limits
        self._token = None if token is None else token.encode()
        self._serving = serving

    # the boundary -------------------------------------------------------------------------------

    def endpoint(
        self,
        rpc: str,
        handler: Callable[[Request], Awaitable[Response]],
        open_: bool = False,
        watch: bool = False,
        changes: bool = False,
    ) -> Callable[[Request], Awaitable[Response]]:
        """`handler` behind the token (unless open_), with its errors answered by the status table;
        the request is counted as `rpc` with the status code it got. A browser may POST only from
        this server's own pages, and, to an endpoint that `changes` what is served, only under a
        Host name it knows. watch: the work stops when the caller hangs up."""

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
                return error_response(err, close=unread)
            except HTTPException:
                raise
            except ClientDisconnect:
                request.scope["state"]["code"] = "CANCELLED"
                return Response(status_code=499)  # nobody reads it
            except Exception:
                log.exception("unexpected error in %s over HTTP", rpc)
                request.scope["state"]["code"] = "INTERNAL"
                return JSONResponse({"error": INTERNAL_MESSAGE, "code": "INTERNAL"}, 500)
            request.scope["state"]["code"] = "OK"
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
        asking: a form, or fetch with no-cors), and for one that `changes` what is served under a
        Host name that is not this machine's address nor in --http-allowed-hosts (a name an attacker
        can point at this server: DNS rebinding). Callers other than browsers send no Origin."""
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

    async def _watched(self, request: Request, handler: Callable[[Request], Awaitable[Response]]) -> Response:
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
        only half-closed is waiting for its answer: service/http/front.py tells the two apart)."""
        await request.scope["state"].setdefault("body_read", asyncio.Event()).wait()
        while (await request.receive())["type"] != "http.disconnect":
            pass

    @staticmethod
    def check_type(request: Request, types: tuple[str, ...], optional_type: bool = False) -> None:
        """UnsupportedMediaType unless the body's content type is one of `types` (or, when
        optional_type, none is given)."""
        kind = (header(request, "content-type") or "").partition(";")[0].strip().lower()
        if kind not in types and not (optional_type and not kind):
            raise UnsupportedMediaType(
                f"content type {kind or 'none'!r} is not taken here; send {' or '.join(types)}"
            )

    async def body(self, request: Request, types: tuple[str, ...], optional_type: bool = False) -> bytes:
        """The request's body: its content type checked, its declared size checked before reading,
        its real size while reading, and the whole read within the read timeout."""
        self.check_type(request, types, optional_type)
        encoding = (header(request, "content-encoding") or "identity").strip().lower()
        if encoding != "identity":
            raise UnsupportedMediaType(
                f"content encoding {quoted(encoding)} is not taken; send the body as is"
            )
        limit = self.limits.max_body_bytes
        declared = header(request, "content-length")
        if declared is not None and not (declared.isascii() and declared.isdigit()):
            raise InvalidInput(f"Content-Length {quoted(declared)} is not a number of bytes")
        if declared is not None and int(declared) > limit:
            raise PayloadTooLarge(f"the body is {declared} bytes; the limit is {limit} (--max-message-bytes)")
        chunks, size = [], 0
        try:
            async with asyncio.timeout(self.limits.read_timeout_s):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise PayloadTooLarge(f"the body is over {limit} bytes (--max-message-bytes)")
                    chunks.append(chunk)
        except TimeoutError:
            raise ReadTimeout(
                f"the body did not arrive within {self.limits.read_timeout_s:g} s (--http-read-timeout-s)"
            ) from None
        state = request.scope["state"]
        state["body"] = True
        state.setdefault("body_read", asyncio.Event()).set()
        return b"".join(chunks)

    async def message(self, request: Request, message: Message) -> Message:
        """A sentiment.v1 request from its JSON body (protobuf's JSON mapping); a large one read in a
        worker thread, off the event loop."""
        data = await self.body(request, ("application/json",))
        max_values = self.limits.max_json_values

        def parse() -> Message:
            value = parse_json(data, "the request body", max_values)
            try:
                return json_format.ParseDict(value, message)
            except json_format.ParseError as err:
                name = message.DESCRIPTOR.full_name
                raise InvalidInput(f"the request is not a valid {name}: {str(err)[:300]}") from None

        return await self.parsed(data, parse)

    @staticmethod
    async def parsed(data: bytes, parse: Callable[[], T]) -> T:
        """parse() of a request body: where the body arrived when it is small, else in a worker
        thread, off the event loop that serves every other caller."""
        return await asyncio.to_thread(parse) if len(data) > SMALL_BODY_BYTES else parse()

    def check_answer(self, size: int) -> None:
        """The last guard before sending: an answer over --max-message-bytes is refused, over HTTP as
        over gRPC (the size check before the work should have caught it)."""
        limit = self.limits.max_body_bytes
        if size > limit:
            raise InvalidInput(
                f"the answer takes {size / 2**20:.1f} MiB in JSON; the message limit is {limit / 2**20:.1f} "
                "MiB (--max-message-bytes): send fewer texts per request, or ask for less attention"
            )

    @staticmethod
    async def json_bytes(message: Message, heavy: bool = False) -> bytes:
        """A message in protobuf's JSON mapping, fields at their defaults included; a heavy one is
        rendered in a worker thread, off the event loop."""

        def render() -> bytes:
            value = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
            return json.dumps(value, separators=(",", ":")).encode()

        return await asyncio.to_thread(render) if heavy else render()

    async def json_of(self, message: Message, heavy: bool = False) -> Response:
        body = await self.json_bytes(message, heavy)
        self.check_answer(len(body))
        return Response(body, media_type="application/json")

    # sentiment.v1 -------------------------------------------------------------------------------

    async def predict(self, request: Request) -> Response:
        message = await self.message(request, pb.PredictRequest())
        assert isinstance(message, pb.PredictRequest)
        response = await self.sentiment.predict(message, None, json=True)
        return await self.json_of(response, heavy=message.attention == pb.ATTENTION_MODE_FULL)

    async def predict_stream(self, request: Request) -> Response:
        """NDJSON: one PredictStreamRequest per line in, one PredictStreamResponse per line out, in the
        order they finish; a line over --max-message-bytes ends the stream with an error line."""
        self.check_type(request, JSON_TYPES)
        answers = self.sentiment.predict_each(self._lines(request), None, json=True)

        async def lines() -> AsyncIterator[bytes]:
            try:
                async for answer in answers:
                    yield (await self._line(answer)) + b"\n"
            except ServiceError as err:  # the stream as a whole ends: too slow, too long a line, draining
                error = {"error": err.message, "code": status_of(err).grpc.name}
                yield json.dumps(error).encode() + b"\n"
            except ClientDisconnect:
                return
            finally:
                await close_stream(answers)

        stalled = self.metrics.http_refusals.labels("stream_stalled").inc
        return Lines(lines(), self.limits.read_timeout_s, stalled)

    async def _lines(self, request: Request) -> AsyncIterator[pb.PredictStreamRequest | Malformed]:
        """The stream's requests, one a line; each line must arrive whole within the read timeout
        of the moment it was awaited (or of its first byte), however its bytes are spread."""
        limit, timeout_s = self.limits.max_body_bytes, self.limits.read_timeout_s
        loop = asyncio.get_running_loop()
        pending = bytearray()  # the unfinished line: grows in place, split only when a line ends
        stream = request.stream().__aiter__()
        due = loop.time() + timeout_s  # when the line being read must be whole
        while True:
            try:
                async with asyncio.timeout_at(due):
                    chunk = await anext(stream, None)
            except TimeoutError:
                raise ReadTimeout(
                    f"a line did not arrive whole within {timeout_s:g} s (--http-read-timeout-s)"
                ) from None
            if chunk is None:
                break
            pending += chunk
            if b"\n" in chunk:
                *whole, rest = pending.split(b"\n")
                pending = bytearray(rest)
                due = loop.time() + timeout_s  # the next line's time starts now
                for line in whole:
                    if line.strip():
                        yield self._parse_line(bytes(line))
            if len(pending) > limit:
                raise PayloadTooLarge(f"a line is over the limit of {limit} bytes (--max-message-bytes)")
        if pending.strip():
            yield self._parse_line(bytes(pending))

    @staticmethod
    def _parse_line(line: bytes) -> pb.PredictStreamRequest | Malformed:
        message = pb.PredictStreamRequest()
        try:
            json_format.Parse(line, message)
        except (json_format.ParseError, UnicodeDecodeError, RecursionError) as err:
            return Malformed(message.DESCRIPTOR.full_name, err)
        return message

    async def _line(self, message: pb.PredictStreamResponse) -> bytes:
        return await self.json_bytes(message, heavy=message.response.ByteSize() > 1 << 16)

    async def model_info(self, request: Request) -> Response:
        text = request.query_params.get("model_version", "0")
        version = 0 if text == "0" else version_number(text)
        if version is None:
            raise InvalidInput(f"model_version {quoted(text)} is not a version number (1, 2, ...)")
        info = self.sentiment.model_info(pb.GetModelInfoRequest(model_version=version))
        return await self.json_of(info)

    # KServe v2 ----------------------------------------------------------------------------------

    async def live(self, request: Request) -> Response:
        return JSONResponse({"live": True})

    async def ready(self, request: Request) -> Response:
        ready = self._serving()
        return JSONResponse({"ready": ready}, 200 if ready else 503)

    async def server_metadata(self, request: Request) -> Response:
        metadata = server_metadata()
        return JSONResponse(
            {"name": metadata.name, "version": metadata.version, "extensions": list(metadata.extensions)}
        )

    @staticmethod
    def _model(request: Request) -> tuple[str, str]:
        return request.path_params["name"], request.path_params.get("version", "")

    async def model_metadata(self, request: Request) -> Response:
        name, version = self._model(request)
        request_message = inference_pb.ModelMetadataRequest(name=name, version=version)
        metadata = self.inference.model_metadata(request_message)
        return JSONResponse(kserve.metadata(metadata))

    async def model_ready(self, request: Request) -> Response:
        name, version = self._model(request)
        self.inference.check_model(name, version)
        ready = self._serving() and self.inference.models.ready
        return JSONResponse({"name": name, "ready": ready}, 200 if ready else 503)

    async def infer(self, request: Request) -> Response:
        length = header(request, kserve.HEADER_LENGTH)
        types = ("application/json", "application/octet-stream")
        # tritonclient sends no content type; a browser's form content types are refused
        data = await self.body(request, types, optional_type=True)
        max_values = self.limits.max_json_values
        call = await self.parsed(data, lambda: kserve.parse_infer(data, length, max_values))
        name, version = self._model(request)
        call.request.model_name, call.request.model_version = name, version
        answer = await self.inference.infer(call.request, None, json=True)
        heavy = len(answer.raw_output_contents) > 4 or answer.ByteSize() > 1 << 16
        body, json_length = (
            await asyncio.to_thread(kserve.render_infer, answer, call)
            if heavy
            else (kserve.render_infer(answer, call))
        )
        self.check_answer(len(body))
        if json_length is None:
            return Response(body, media_type="application/json")
        return Response(
            body,
            media_type="application/octet-stream",
            headers={"Inference-Header-Content-Length": str(json_length)},
        )

    # Triton's model repository extension ---------------------------------------------------------

    async def _object(self, request: Request) -> dict[str, Any]:
        """A repository request's JSON object body; an empty body is an empty object."""
        data = await self.body(request, ("application/json",), optional_type=True)
        if not data.strip():
            return {}
        max_values = self.limits.max_json_values
        return await self.parsed(data, lambda: parse_json(data, "the request body", max_values))

    def _parameters(self, body: dict[str, Any]) -> dict[str, Any]:
        parameters = body.get("parameters", {})
        if not isinstance(parameters, dict):
            raise InvalidInput("parameters must be a JSON object")
        return parameters

    async def repository_index(self, request: Request) -> Response:
        ready = (await self._object(request)).get("ready", False)
        if not isinstance(ready, bool):
            raise InvalidInput("ready must be true or false")
        return JSONResponse(repository.index(self.inference.models, ready))

    async def repository_load(self, request: Request) -> Response:
        parameters = self._parameters(await self._object(request))
        models, control = self.inference.models, self.inference.control
        await repository.load(models, control, request.path_params["name"], parameters)
        return JSONResponse({})

    async def repository_unload(self, request: Request) -> Response:
        parameters = self._parameters(await self._object(request))
        models, control = self.inference.models, self.inference.control
        await repository.unload(models, control, request.path_params["name"], parameters)
        return JSONResponse({})

    # the page and the API's description --------------------------------------------------------

    async def page(self, request: Request) -> Response:
        name = request.path_params.get("file", "index.html")
        kind = "text/html; charset=utf-8" if name == "index.html" else STATIC.get(name)
        if kind is None:
            raise HTTPException(404, f"no such file {name[:40]!r}")
        content = resources.files("service.http").joinpath("static", name).read_bytes()
        headers = {"Content-Security-Policy": PAGE_SECURITY, "X-Content-Type-Options": "nosniff"}
        return Response(content, media_type=kind, headers={**headers, "Cache-Control": "no-cache"})

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document())

    def routes(self) -> list[Route]:
        e = self.endpoint
        post = ["POST"]
        model = "/v2/models/{name}"
        versioned = "/v2/models/{name}/versions/{version}"
        routes = [
            Route("/", e("http/page", self.page, open_=True), methods=["GET"]),
            Route("/static/{file}", e("http/page", self.page, open_=True), methods=["GET"]),
            Route("/openapi.json", e("http/openapi", self.openapi), methods=["GET"]),
            Route("/v1/predict", e(SENTIMENT + "Predict", self.predict, watch=True), methods=["POST"]),
            Route("/v1/predict/stream", e(SENTIMENT + "PredictStream", self.predict_stream), methods=post),
            Route("/v1/model", e(SENTIMENT + "GetModelInfo", self.model_info), methods=["GET"]),
            Route("/v2/health/live", e(INFERENCE + "ServerLive", self.live, open_=True), methods=["GET"]),
            Route("/v2/health/ready", e(INFERENCE + "ServerReady", self.ready, open_=True), methods=["GET"]),
            Route("/v2", e(INFERENCE + "ServerMetadata", self.server_metadata), methods=["GET"]),
            Route(
                "/v2/repository/index", e(INFERENCE + "RepositoryIndex", self.repository_index), methods=post
            ),
            Route(
                "/v2/repository/models/{name}/load",
                e(INFERENCE + "RepositoryModelLoad", self.repository_load, changes=True),
                methods=post,
            ),
            Route(
                "/v2/repository/models/{name}/unload",
                e(INFERENCE + "RepositoryModelUnload", self.repository_unload, changes=True),
                methods=post,
            ),
        ]
        for path in (model, versioned):
            routes += [
                Route(path, e(INFERENCE + "ModelMetadata", self.model_metadata), methods=["GET"]),
                Route(path + "/ready", e(INFERENCE + "ModelReady", self.model_ready), methods=["GET"]),
                Route(path + "/infer", e(INFERENCE + "ModelInfer", self.infer, watch=True), methods=["POST"]),
            ]
        return routes


class Observed:
    """Counts and times every HTTP request in the service's metrics, and holds the drain open while
    it is answered (a streamed answer included)."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        drain: DrainInterceptor,
        access: AccessLog | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.drain = drain
        self.access = access
        self.tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if self.tracing is not None and path not in UNTRACED and not path.startswith("/static/"):
            await self._traced(self.tracing, scope, receive, send)
            return
        await self._observed(scope, receive, send)

    async def _observed(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.setdefault("state", {})
        metrics = self.metrics
        metrics.in_flight.inc()
        self.drain.begin()
        opened = self.access.begin() if self.access is not None else None
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            metrics.in_flight.dec()
            self.drain.end()
            rpc = state.get("rpc", "http/unrouted")  # a path or method no endpoint serves
            code = state.get("code", "NOT_FOUND")
            elapsed = time.perf_counter() - started
            metrics.requests.labels(rpc, code, "http").inc()
            metrics.request_seconds.labels(rpc, "http").observe(elapsed)
            if opened is not None and self.access is not None:
                self.access.end(opened, rpc, code, "http", peer_of(scope.get("client")), elapsed)

    async def _traced(self, tracing: Tracing, scope: Scope, receive: Receive, send: Send) -> None:
        """The request in a server span (service/ops/tracing), named by HTTP method and route."""
        carrier = {}
        for key, value in scope["headers"]:
            name = key.decode("latin-1").lower()
            if name in CARRIED:
                carrier[name] = value.decode("latin-1")
        attributes = {
            "http.request.method": scope["method"],
            "url.path": scope["path"],
            "network.peer.address": peer_of(scope.get("client")),
        }
        opened = tracing.start_call(scope["method"], carrier, attributes)
        status = 0

        async def sent(message: AsgiMessage) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._observed(scope, receive, sent)
        finally:
            state = scope.get("state", {})
            route = scope.get("route")
            span = opened[0]
            if route is not None and span.is_recording():
                span.update_name(f"{scope['method']} {route.path}")
            done = {"http.response.status_code": status, "rpc.method": state.get("rpc", "http/unrouted")}
            if route is not None:
                done["http.route"] = route.path
            tracing.end_call(opened, state.get("code", "NOT_FOUND"), done)


def peer_of(client: tuple[str, int] | None) -> str:
    """An HTTP caller's address written as gRPC writes a peer (ipv4:host:port, ipv6:[host]:port)."""
    if not client:
        return "unknown"
    host, port = client
    return f"ipv6:[{host}]:{port}" if ":" in host else f"ipv4:{host}:{port}"


async def _not_routed(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "NOT_FOUND", 405: "UNIMPLEMENTED"}.get(exc.status_code, "INVALID_ARGUMENT")
    request.scope.setdefault("state", {})["code"] = code
    return JSONResponse({"error": exc.detail, "code": code}, exc.status_code, exc.headers)


def build_app(front: Front, access: AccessLog | None = None, tracing: Tracing | None = None) -> ASGIApp:
    app = Starlette(routes=front.routes(), exception_handlers={HTTPException: _not_routed})
    return Observed(app, front.metrics, front.drain, access, tracing)
