"""The HTTP door's application: its routes (the service's own API in protobuf's JSON mapping, KServe
v2, the repository extension, the classify APIs of other servers, the playground page and
/openapi.json), each an endpoint of the boundary, under the call observer. Like the gRPC door, it
only converts and calls the call layer (calls/); errors reach callers through the same table, with
their HTTP status."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from service.http.boundary import Boundary, Handler
from service.http.classify import ClassifyEndpoints, openai_error, tei_error
from service.http.inference import InferenceEndpoints
from service.http.observed import Observed
from service.http.openapi import openapi_document
from service.http.sentiment import SentimentEndpoints

if TYPE_CHECKING:
    from service.calls.layer import Calls
    from service.http.bodies import Limits

SENTIMENT = "sentiment.v1.SentimentService/"
INFERENCE = "inference.GRPCInferenceService/"
PAGE_SECURITY = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'"
STATIC = {
    "playground.js": "text/javascript; charset=utf-8",
    "playground.css": "text/css; charset=utf-8",
}


async def page(request: Request) -> Response:
    name = request.path_params.get("file", "index.html")
    kind = "text/html; charset=utf-8" if name == "index.html" else STATIC.get(name)
    if kind is None:
        raise HTTPException(404, f"no such file {name[:40]!r}")
    content = resources.files("service.http").joinpath("static", name).read_bytes()
    headers = {"Content-Security-Policy": PAGE_SECURITY, "X-Content-Type-Options": "nosniff"}
    return Response(content, media_type=kind, headers={**headers, "Cache-Control": "no-cache"})


async def openapi(request: Request) -> Response:
    return JSONResponse(openapi_document())


def classify_routes(boundary: Boundary, classify: ClassifyEndpoints) -> list[Route]:
    """The classify APIs of vLLM and SGLang, Infinity, and text-embeddings-inference (with the
    Inference API's task at /), each counted under its own method name and refused in its own
    error shape."""
    e = boundary.endpoint
    get, post = ["GET"], ["POST"]
    table: tuple[tuple[str, str, Handler, list[str], dict[str, Any]], ...] = (
        ("/v1/classify", "http/v1/classify", classify.vllm_classify, post, {"shape": openai_error}),
        ("/v1/models", "http/v1/models", classify.openai_models, get, {"shape": openai_error}),
        ("/classify", "http/classify", classify.infinity_classify, post, {"shape": openai_error}),
        ("/predict", "http/predict", classify.tei_predict, post, {"shape": tei_error}),
        ("/", "http/index", classify.hf_task, post, {"shape": tei_error}),
        ("/tokenize", "http/tokenize", classify.tei_tokenize, post, {"shape": tei_error}),
        ("/info", "http/info", classify.tei_info, get, {"shape": tei_error}),
        ("/health", "http/health", classify.tei_health, get, {"shape": tei_error, "open_": True}),
    )  # fmt: skip
    watched = {"/v1/classify", "/classify", "/predict", "/"}  # model work: stopped when the caller goes
    return [
        Route(path, e(rpc, handler, watch=path in watched, **kw), methods=methods)
        for path, rpc, handler, methods, kw in table
    ]


def routes(boundary: Boundary, sentiment: SentimentEndpoints, inference: InferenceEndpoints) -> list[Route]:
    e = boundary.endpoint
    get, post = ["GET"], ["POST"]
    kserve: tuple[tuple[str, str, Handler, list[str], dict[str, Any]], ...] = (
        ("/v2/health/live", "ServerLive", inference.live, get, {"open_": True}),
        ("/v2/health/ready", "ServerReady", inference.ready, get, {"open_": True}),
        ("/v2", "ServerMetadata", inference.server_metadata, get, {}),
        ("/v2/repository/index", "RepositoryIndex", inference.repository_index, post, {}),
        ("/v2/repository/models/{name}/load", "RepositoryModelLoad", inference.repository_load, post,
         {"changes": True}),
        ("/v2/repository/models/{name}/unload", "RepositoryModelUnload", inference.repository_unload, post,
         {"changes": True}),
    )  # fmt: skip
    table = [
        Route("/", e("http/page", page, open_=True), methods=get),
        Route("/static/{file}", e("http/page", page, open_=True), methods=get),
        Route("/openapi.json", e("http/openapi", openapi), methods=get),
        Route("/v1/predict", e(SENTIMENT + "Predict", sentiment.predict, watch=True), methods=post),
        Route("/v1/predict/stream", e(SENTIMENT + "PredictStream", sentiment.predict_stream), methods=post),
        Route("/v1/model", e(SENTIMENT + "GetModelInfo", sentiment.model_info), methods=get),
    ]
    table += [Route(path, e(INFERENCE + rpc, h, **kw), methods=m) for path, rpc, h, m, kw in kserve]
    for path in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        table += [
            Route(path, e(INFERENCE + "ModelMetadata", inference.model_metadata), methods=get),
            Route(path + "/ready", e(INFERENCE + "ModelReady", inference.model_ready), methods=get),
            Route(path + "/infer", e(INFERENCE + "ModelInfer", inference.infer, watch=True), methods=post),
        ]
    return table


async def _not_routed(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "NOT_FOUND", 405: "UNIMPLEMENTED"}.get(exc.status_code, "INVALID_ARGUMENT")
    request.scope.setdefault("state", {})["code"] = code
    return JSONResponse({"error": exc.detail, "code": code}, exc.status_code, exc.headers)


def build_app(calls: Calls, limits: Limits, token: str | None, serving: Callable[[], bool]) -> ASGIApp:
    """The door's ASGI application over the calls; serving(): what health says of the whole server."""
    stalled = calls.observer.metrics.http_refusals.labels("stream_stalled").inc
    boundary = Boundary(limits, token)
    table = routes(
        boundary,
        SentimentEndpoints(calls.sentiment, limits, stalled),
        InferenceEndpoints(calls.inference, calls.repository, limits, serving),
    )
    table += classify_routes(boundary, ClassifyEndpoints(calls.classify, limits, serving))
    return Observed(Starlette(routes=table, exception_handlers={HTTPException: _not_routed}), calls.observer)
