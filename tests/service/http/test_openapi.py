"""service/http/openapi.py: the document validates, and it describes every route the door serves
with every method it takes, and no route it does not serve."""

from __future__ import annotations

from typing import Any, cast

from openapi_spec_validator import validate
from starlette.routing import Route

from service.http.app import classify_routes, routes
from service.http.bodies import Limits
from service.http.boundary import Boundary
from service.http.classify import ClassifyEndpoints
from service.http.inference import InferenceEndpoints
from service.http.openapi import openapi_document
from service.http.sentiment import SentimentEndpoints


def served() -> set[tuple[str, str]]:
    """(path, method) of every route of the door's application."""
    limits = Limits(1 << 20, 10.0, 1000, ())
    boundary = Boundary(limits, None)
    nothing = cast(Any, None)  # the endpoints are not called: only their routes are read
    table: list[Route] = routes(
        boundary,
        SentimentEndpoints(nothing, limits, lambda: None),
        InferenceEndpoints(nothing, nothing, limits, lambda: True),
    )
    table += classify_routes(boundary, ClassifyEndpoints(nothing, limits, lambda: True))
    pairs = {(route.path, method.lower()) for route in table for method in route.methods or ()}
    return pairs - {(path, "head") for path, _ in pairs}  # starlette adds HEAD to every GET


def test_the_document_validates_and_covers_every_route_and_method() -> None:
    document = openapi_document()
    validate(document)  # raises on any breach of the OpenAPI 3.1 schema
    described = {(path, method) for path, operations in document["paths"].items() for method in operations}
    assert described == served()


def test_each_classify_api_documents_its_own_error_shape() -> None:
    paths = openapi_document()["paths"]

    def error_schema(path: str, method: str) -> str:
        return str(paths[path][method]["responses"]["400"]["content"]["application/json"]["schema"]["$ref"])

    assert error_schema("/v1/classify", "post").endswith("/OpenAIError")
    assert error_schema("/classify", "post").endswith("/OpenAIError")
    assert error_schema("/predict", "post").endswith("/TeiError")
    assert error_schema("/", "post").endswith("/TeiError")
    assert error_schema("/v1/predict", "post").endswith("/Error")
