"""The HTTP endpoints: the service's own API (protobuf's JSON mapping of sentiment.v1), KServe v2 over
HTTP, the OpenAPI document and the playground page.

Each endpoint is a boundary like the gRPC servicers and calls the same servicer methods, so
validation and limits exist once; service/status.py maps the same errors to HTTP statuses. Every
request is counted in the same metrics as gRPC calls (label protocol="http"), under the name of the
gRPC method it stands for, and holds the server's drain open until its answer is sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format
from google.protobuf.message import Message
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage

from sentiment_client.pb.inference import grpc_predict_v2_pb2 as inference_pb
from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from service.access import AccessLog
from service.auth import bearer_refusal
from service.errors import (
    InvalidInput,
    PayloadTooLarge,
    QueueFull,
    ReadTimeout,
    ServiceError,
    Unauthenticated,
    UnsupportedMediaType,
)
from service.http import kserve
from service.http.openapi import openapi_document
from service.interceptors import CARRIED, DrainInterceptor
from service.metrics import Metrics
from service.servicers import InferenceServicer, SentimentServicer, repository
from service.servicers._boundary import INTERNAL_MESSAGE, Malformed
from service.servicers.inference import server_metadata
from service.status import status_of

if TYPE_CHECKING:
    from service.tracing import Tracing

log = logging.getLogger(__name__)

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
    """What an HTTP caller may send: a body's bytes (before it is read) and how long it may take."""

    max_body_bytes: int
    read_timeout_s: float


class Lines(Response):
    """An NDJSON answer sent line by line as it is made. Unlike starlette's StreamingResponse it
    does not read the request while answering, so the request's own lines reach the endpoint."""

    media_type = NDJSON

    def __init__(self, lines: AsyncIterator[bytes]) -> None:
        super().__init__(None, 200)
        del self.headers["content-length"]
        self._lines = lines

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        async for line in self._lines:
            await send({"type": "http.response.body", "body": line, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def error_response(err: ServiceError) -> JSONResponse:
    status = status_of(err)
    headers = {"Retry-After": "1"} if isinstance(err, QueueFull) else {}
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
        self, rpc: str, handler: Callable[[Request], Awaitable[Response]], open_: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        """`handler` behind the token (unless open_), with its errors answered by the status table;
        the request is counted as `rpc` with the status code it got."""

        async def answer(request: Request) -> Response:
            request.scope["state"]["rpc"] = rpc
            try:
                if not open_ and self._token is not None:
                    refusal = bearer_refusal(request.headers.getlist("authorization"), self._token)
                    if refusal is not None:
                        raise Unauthenticated(refusal)
                response = await handler(request)
            except ServiceError as err:
                request.scope["state"]["code"] = status_of(err).grpc.name
                return error_response(err)
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

    @staticmethod
    def check_type(request: Request, types: tuple[str, ...], optional_type: bool = False) -> None:
        """UnsupportedMediaType unless the body's content type is one of `types` (or, when
        optional_type, none is given)."""
        kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if kind not in types and not (optional_type and not kind):
            raise UnsupportedMediaType(
                f"content type {kind or 'none'!r} is not taken here; send {' or '.join(types)}"
            )

    async def body(self, request: Request, types: tuple[str, ...], optional_type: bool = False) -> bytes:
        """The request's body: its content type checked, its declared size checked before reading,
        its real size while reading, and the whole read within the read timeout."""
        self.check_type(request, types, optional_type)
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding != "identity":
            raise UnsupportedMediaType(f"content encoding {encoding!r} is not taken; send the body as is")
        limit = self.limits.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and not (declared.isascii() and declared.isdigit()):
            raise InvalidInput(f"Content-Length {declared!r} is not a number of bytes")
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
        return b"".join(chunks)

    async def message(self, request: Request, message: Message) -> Message:
        """A sentiment.v1 request from its JSON body (protobuf's JSON mapping)."""
        value = kserve.parse_json(await self.body(request, ("application/json",)), "the request body")
        try:
            return json_format.ParseDict(value, message)
        except json_format.ParseError as err:
            raise InvalidInput(f"the request is not a valid {message.DESCRIPTOR.full_name}: {err}") from None

    @staticmethod
    async def json_bytes(message: Message, heavy: bool = False) -> bytes:
        """A message in protobuf's JSON mapping, fields at their defaults included; a heavy one is
        rendered in a worker thread, off the event loop."""

        def render() -> bytes:
            value = json_format.MessageToDict(message, always_print_fields_with_no_presence=True)
            return json.dumps(value, separators=(",", ":")).encode()

        return await asyncio.to_thread(render) if heavy else render()

    async def json_of(self, message: Message, heavy: bool = False) -> Response:
        return Response(await self.json_bytes(message, heavy), media_type="application/json")

    # sentiment.v1 -------------------------------------------------------------------------------

    async def predict(self, request: Request) -> Response:
        message = await self.message(request, pb.PredictRequest())
        assert isinstance(message, pb.PredictRequest)
        response = await self.sentiment.predict(message, None)
        return await self.json_of(response, heavy=message.attention == pb.ATTENTION_MODE_FULL)

    async def predict_stream(self, request: Request) -> Response:
        """NDJSON: one PredictStreamRequest per line in, one PredictStreamResponse per line out, in the
        order they finish; a line over --max-message-bytes ends the stream with an error line."""
        self.check_type(request, JSON_TYPES)
        answers = self.sentiment.predict_each(self._lines(request), None)

        async def lines() -> AsyncIterator[bytes]:
            try:
                async for answer in answers:
                    yield (await self._line(answer)) + b"\n"
            except ServiceError as err:  # the stream as a whole ends: too slow, too long a line, draining
                error = {"error": err.message, "code": status_of(err).grpc.name}
                yield json.dumps(error).encode() + b"\n"
            except ClientDisconnect:
                return

        return Lines(lines())

    async def _lines(self, request: Request) -> AsyncIterator[pb.PredictStreamRequest | Malformed]:
        limit = self.limits.max_body_bytes
        pending = bytearray()  # the unfinished line: grows in place, split only when a line ends
        stream = request.stream().__aiter__()
        while True:
            try:
                async with asyncio.timeout(self.limits.read_timeout_s):
                    chunk = await anext(stream, None)
            except TimeoutError:
                raise ReadTimeout(
                    f"no line arrived within {self.limits.read_timeout_s:g} s (--http-read-timeout-s)"
                ) from None
            if chunk is None:
                break
            pending += chunk
            if b"\n" in chunk:
                *whole, rest = pending.split(b"\n")
                pending = bytearray(rest)
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
        version = request.query_params.get("model_version", "0")
        if not (version.isascii() and version.isdigit() and len(version) <= 18):
            raise InvalidInput(f"model_version {version[:40]!r} is not a version number")
        info = self.sentiment.model_info(pb.GetModelInfoRequest(model_version=int(version)))
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
        header = request.headers.get(kserve.HEADER_LENGTH)
        types = ("application/json", "application/octet-stream")
        # tritonclient sends no content type; a browser's form content types are refused
        data = await self.body(request, types, optional_type=True)
        call = kserve.parse_infer(data, header)
        name, version = self._model(request)
        call.request.model_name, call.request.model_version = name, version
        answer = await self.inference.infer(call.request, None)
        heavy = len(answer.raw_output_contents) > 4 or answer.ByteSize() > 1 << 16
        body, json_length = (
            await asyncio.to_thread(kserve.render_infer, answer, call)
            if heavy
            else (kserve.render_infer(answer, call))
        )
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
        value = kserve.parse_json(data, "the request body")
        if not isinstance(value, dict):
            raise InvalidInput("the request body must be a JSON object")
        return value

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
            Route("/openapi.json", e("http/openapi", self.openapi, open_=True), methods=["GET"]),
            Route("/v1/predict", e(SENTIMENT + "Predict", self.predict), methods=["POST"]),
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
                e(INFERENCE + "RepositoryModelLoad", self.repository_load),
                methods=post,
            ),
            Route(
                "/v2/repository/models/{name}/unload",
                e(INFERENCE + "RepositoryModelUnload", self.repository_unload),
                methods=post,
            ),
        ]
        for path in (model, versioned):
            routes += [
                Route(path, e(INFERENCE + "ModelMetadata", self.model_metadata), methods=["GET"]),
                Route(path + "/ready", e(INFERENCE + "ModelReady", self.model_ready), methods=["GET"]),
                Route(path + "/infer", e(INFERENCE + "ModelInfer", self.infer), methods=["POST"]),
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
        """The request in a server span (service/tracing), named by HTTP method and route."""
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
