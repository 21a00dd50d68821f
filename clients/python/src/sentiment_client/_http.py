"""The HTTP transport: the client's calls over the server's HTTP/JSON door (httpx), chosen by a target
written as a URL (http://host:8080, https://...). The same request and answer messages travel in
protobuf's JSON mapping (/v1/predict, /v1/model, /v1/predict/stream as NDJSON, the repository under
/v2/repository); an HTTP error becomes the gRPC status its body names, so that retries, deadlines
and the SDK's exceptions behave as over gRPC. Where only HTTP gets through (a proxy, a browser-era
gateway), code written for gRPC works by changing the address.
"""

from __future__ import annotations

import json
import ssl
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx
from google.protobuf import json_format
from google.protobuf.message import Message

from sentiment_client.pb.inference import grpc_predict_v2_pb2 as inference_pb
from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb

NDJSON = "application/x-ndjson"
# what grpc.health answers for; HTTP readiness (/v2/health/ready) speaks for the whole server
SERVICES = frozenset(
    {
        "",
        pb.DESCRIPTOR.services_by_name["SentimentService"].full_name,
        inference_pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
    }
)
CODES = {code.name: code for code in grpc.StatusCode}
# the gRPC status of an HTTP status, for answers whose body names none (a proxy's, say)
_S = grpc.StatusCode
BY_STATUS = {
    400: _S.INVALID_ARGUMENT, 401: _S.UNAUTHENTICATED, 403: _S.PERMISSION_DENIED, 404: _S.NOT_FOUND,
    408: _S.DEADLINE_EXCEEDED, 409: _S.FAILED_PRECONDITION, 413: _S.RESOURCE_EXHAUSTED,
    415: _S.INVALID_ARGUMENT, 429: _S.RESOURCE_EXHAUSTED, 500: _S.INTERNAL, 501: _S.UNIMPLEMENTED,
    502: _S.UNAVAILABLE, 503: _S.UNAVAILABLE, 504: _S.DEADLINE_EXCEEDED,
}  # fmt: skip


def http_url(target: str) -> str | None:
    """The base URL when `target` is one (the HTTP transport), else None (gRPC's host:port)."""
    return target.rstrip("/") if target.startswith(("http://", "https://")) else None


class HttpCallError(grpc.RpcError):
    """A failed HTTP call, as the gRPC status it stands for; retry_after: the server's Retry-After."""

    def __init__(self, code: grpc.StatusCode, details: str, retry_after: float | None = None) -> None:
        super().__init__(details)
        self._code = code
        self._details = details
        self.retry_after = retry_after

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def error_of(response: httpx.Response) -> HttpCallError:
    """The error an HTTP answer other than 200 says: the gRPC code its body names (this server's
    {"error", "code"}), else the one its status stands for."""
    code = BY_STATUS.get(response.status_code, grpc.StatusCode.UNKNOWN)
    details = f"HTTP {response.status_code}"
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        details = body["error"]
        code = CODES.get(str(body.get("code")), code)
    retry_after = response.headers.get("retry-after", "")
    return HttpCallError(code, details, float(retry_after) if retry_after.isdigit() else None)


def transport_error(err: httpx.HTTPError) -> HttpCallError:
    if isinstance(err, httpx.TimeoutException):
        return HttpCallError(grpc.StatusCode.DEADLINE_EXCEEDED, f"no answer in time ({type(err).__name__})")
    return HttpCallError(grpc.StatusCode.UNAVAILABLE, f"could not reach the server: {err}")


def _json(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=False)


def _parameters(parameters: Any) -> dict[str, Any]:
    """KServe parameters (a map of InferParameter) as JSON values."""
    return {name: getattr(p, str(p.WhichOneof("parameter_choice"))) for name, p in parameters.items()}


def _index(body: Any) -> inference_pb.RepositoryIndexResponse:
    models = [inference_pb.RepositoryIndexResponse.ModelIndex(**entry) for entry in body]
    return inference_pb.RepositoryIndexResponse(models=models)


@dataclass(frozen=True)
class Call:
    """One HTTP request for one call of the API, and how to read its answer's JSON."""

    method: str
    path: str
    parse: Callable[[Any], Any]
    body: dict[str, Any] | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def arguments(self, timeout: float | None, metadata: Sequence[tuple[str, str]]) -> dict[str, Any]:
        """httpx's request() arguments for this call."""
        return {"method": self.method, "url": self.path, "json": self.body, "params": self.params,
                "headers": dict(metadata), "timeout": timeout}  # fmt: skip

    def answer(self, response: httpx.Response) -> Any:
        """The answer's message, or the error it says."""
        if response.status_code != 200:
            raise error_of(response)
        return self.parse(response.json())


def call_of(name: str, request: Any) -> Call:
    """The HTTP request for the gRPC method `name` with `request`."""
    if name == "Predict":
        return Call("POST", "/v1/predict", lambda b: json_format.ParseDict(b, pb.PredictResponse(), True),
                    _json(request))  # fmt: skip
    if name == "GetModelInfo":
        params = {"model_version": request.model_version} if request.model_version else {}
        parse = lambda b: json_format.ParseDict(b, pb.GetModelInfoResponse(), True)  # noqa: E731
        return Call("GET", "/v1/model", parse, params=params)
    if name == "RepositoryIndex":
        return Call("POST", "/v2/repository/index", _index, {"ready": request.ready})
    action = {"RepositoryModelLoad": "load", "RepositoryModelUnload": "unload"}[name]
    path = f"/v2/repository/models/{request.model_name}/{action}"
    return Call("POST", path, lambda _: None, {"parameters": _parameters(request.parameters)})


def stream_arguments(
    requests: Sequence[pb.PredictStreamRequest], timeout: float | None, metadata: Sequence[tuple[str, str]]
) -> dict[str, Any]:
    """httpx's stream() arguments for one NDJSON exchange of /v1/predict/stream."""
    body = b"".join(json.dumps(_json(r), separators=(",", ":")).encode() + b"\n" for r in requests)
    headers = {**dict(metadata), "content-type": NDJSON}
    return {"method": "POST", "url": "/v1/predict/stream", "content": body, "headers": headers,
            "timeout": timeout}  # fmt: skip


def stream_answers(lines: Iterable[str]) -> list[pb.PredictStreamResponse]:
    """A stream's NDJSON answer lines; a line that ends the stream as a whole raises its error."""
    answers = []
    for line in lines:
        if not line.strip():
            continue
        value = json.loads(line)
        if isinstance(value.get("error"), str):  # the stream as a whole failed (not one request)
            raise HttpCallError(CODES.get(str(value.get("code")), grpc.StatusCode.UNKNOWN), value["error"])
        answers.append(json_format.ParseDict(value, pb.PredictStreamResponse(), True))
    return answers


def _pem_file(value: bytes, folder: Path, name: str) -> str:
    path = folder / name
    path.write_bytes(value)
    return str(path)


def ssl_context(root: bytes | None, certificate: bytes | None, key: bytes | None) -> ssl.SSLContext:
    """TLS for https: the server checked against `root` (else the system's roots), and this client's
    certificate when the server asks for one (mutual TLS)."""
    context = ssl.create_default_context(cadata=root.decode() if root else None)
    if certificate is not None:
        with tempfile.TemporaryDirectory() as folder:  # the ssl module reads them from files
            chain = _pem_file(certificate, Path(folder), "cert.pem")
            private = _pem_file(key, Path(folder), "key.pem") if key is not None else None
            context.load_cert_chain(chain, private)
    return context


class HttpStub:
    """The calls of both gRPC stubs the client uses (sentiment.v1 and the repository), over HTTP; each
    takes (request, timeout, metadata) and returns the answer's message, as a stub's method does."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)

        def call(request: Any, timeout: float | None = None, metadata: Sequence[tuple[str, str]] = ()) -> Any:
            spec = call_of(name, request)
            try:
                response = self.client.request(**spec.arguments(timeout, metadata))
            except httpx.HTTPError as err:
                raise transport_error(err) from err
            return spec.answer(response)

        return call

    def stream(
        self,
        requests: Sequence[pb.PredictStreamRequest],
        timeout: float | None,
        metadata: Sequence[tuple[str, str]],
    ) -> list[pb.PredictStreamResponse]:
        """One NDJSON exchange of /v1/predict/stream: the requests in, their answers out."""
        try:
            with self.client.stream(**stream_arguments(requests, timeout, metadata)) as response:
                if response.status_code != 200:
                    response.read()
                    raise error_of(response)
                return stream_answers(response.iter_lines())
        except httpx.HTTPError as err:
            raise transport_error(err) from err

    def ready(self, timeout: float | None, metadata: Sequence[tuple[str, str]]) -> bool:
        try:
            response = self.client.get("/v2/health/ready", headers=dict(metadata), timeout=timeout)
        except httpx.HTTPError as err:
            raise transport_error(err) from err
        return response.status_code == 200


class AsyncHttpStub:
    """As HttpStub, for asyncio."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name.startswith("_"):
            raise AttributeError(name)

        async def call(
            request: Any, timeout: float | None = None, metadata: Sequence[tuple[str, str]] = ()
        ) -> Any:
            spec = call_of(name, request)
            try:
                response = await self.client.request(**spec.arguments(timeout, metadata))
            except httpx.HTTPError as err:
                raise transport_error(err) from err
            return spec.answer(response)

        return call

    async def stream(
        self,
        requests: Sequence[pb.PredictStreamRequest],
        timeout: float | None,
        metadata: Sequence[tuple[str, str]],
    ) -> list[pb.PredictStreamResponse]:
        try:
            async with self.client.stream(**stream_arguments(requests, timeout, metadata)) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise error_of(response)
                return stream_answers([line async for line in response.aiter_lines()])
        except httpx.HTTPError as err:
            raise transport_error(err) from err

    async def ready(self, timeout: float | None, metadata: Sequence[tuple[str, str]]) -> bool:
        try:
            response = await self.client.get("/v2/health/ready", headers=dict(metadata), timeout=timeout)
        except httpx.HTTPError as err:
            raise transport_error(err) from err
        return response.status_code == 200
