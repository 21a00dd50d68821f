"""The OpenAPI 3 document of the HTTP endpoints (served at /openapi.json).

The sentiment.v1 schemas are derived from the .proto descriptors by protobuf's JSON mapping
(lowerCamelCase names, 64-bit integers as strings, enums by name), so the .proto stays the one
schema; the KServe v2 schemas follow the Open Inference Protocol's HTTP/REST JSON, and the classify
APIs of other servers their own documents (http/classify_openapi.py).
"""

from __future__ import annotations

import functools
from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from sentiment_client import __version__
from sentiment_client.pb.sentiment.v1 import sentiment_pb2 as pb
from service.http.classify_openapi import classify_paths, classify_schemas

SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_DOUBLE: {"type": "number"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "int64", "minimum": 0},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "format": "int64", "minimum": 0},
    FieldDescriptor.TYPE_INT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_SINT64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FieldDescriptor.TYPE_UINT64: {"type": "string", "format": "uint64"},
    FieldDescriptor.TYPE_FIXED64: {"type": "string", "format": "uint64"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _enum(enum: EnumDescriptor) -> dict[str, Any]:
    return {"type": "string", "enum": [value.name for value in enum.values]}


def _field(field: FieldDescriptor, schemas: dict[str, Any]) -> dict[str, Any]:
    if field.message_type is not None:
        schema = _ref(_message(field.message_type, schemas))
    elif field.enum_type is not None:
        schema = _enum(field.enum_type)
    else:
        schema = dict(SCALARS[field.type])
    if field.is_repeated:
        return {"type": "array", "items": schema}
    return schema


def _message(descriptor: Descriptor, schemas: dict[str, Any]) -> str:
    """The schema of a message, added to `schemas` (with the messages it holds); its name."""
    name = descriptor.full_name
    if name not in schemas:
        schemas[name] = {}  # placed first: a message may hold itself
        schemas[name] = {
            "type": "object",
            "additionalProperties": False,
            "properties": {field.camelcase_name: _field(field, schemas) for field in descriptor.fields},
        }
    return name


def _kserve_schemas() -> dict[str, Any]:
    parameters = {"type": "object", "additionalProperties": {"type": ["boolean", "number", "string"]}}
    tensor = {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string", "examples": ["BYTES", "FP32", "INT32"]},
            "shape": {"type": "array", "items": {"type": "integer"}},
            "parameters": parameters,
            "data": {"type": "array", "description": "row-major, flat or nested; BYTES as strings"},
        },
    }
    entry = {
        "type": "object",
        "properties": {k: {"type": "string"} for k in ("name", "version", "state", "reason")},
    }
    return {
        "RepositoryIndex": {"type": "array", "items": entry},
        "RepositoryRequest": {
            "type": "object",
            "properties": {
                "parameters": {
                    "type": "object",
                    "description": "load: config (a Triton model configuration as JSON; its version_policy "
                    "is read), shadow (boolean); unload: version (integer or string)",
                    "additionalProperties": {"type": ["boolean", "integer", "string"]},
                }
            },
        },
        "InferParameters": parameters,
        "InferTensor": tensor,
        "InferRequest": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "parameters": parameters,
                "inputs": {"type": "array", "items": _ref("InferTensor")},
                "outputs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": {"type": "string"}, "parameters": parameters},
                    },
                },
            },
        },
        "InferResponse": {
            "type": "object",
            "required": ["model_name", "outputs"],
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "outputs": {"type": "array", "items": _ref("InferTensor")},
            },
        },
        "ModelMetadata": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "versions": {"type": "array", "items": {"type": "string"}},
                "platform": {"type": "string"},
                "inputs": {"type": "array", "items": _ref("InferTensor")},
                "outputs": {"type": "array", "items": _ref("InferTensor")},
            },
        },
        "ServerMetadata": {
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "extensions": {"type": "array", "items": {"type": "string"}},
            },
        },
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {"type": "string", "description": "what was wrong, for a person"},
                "code": {"type": "string", "description": "the gRPC status code of the same failure"},
            },
        },
    }


def _schema(name: str) -> dict[str, Any]:
    return {"schema": _ref(name)}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


ERRORS = {
    "400": "The request can never succeed as it is (INVALID_ARGUMENT)",
    "401": "No bearer token, or a wrong one",
    "404": "No such model or version",
    "409": "A version failed its checks, or load and unload are off (--model-control)",
    "408": "The body did not arrive in time (--http-read-timeout-s)",
    "413": "The body is over --max-message-bytes",
    "415": "A content type or encoding the endpoint does not take",
    "429": "The queue is full: retry after Retry-After seconds",
    "503": "Starting up or draining: retry, on another replica if possible",
    "504": "The request's deadline passed",
    "500": "The model failed; the server logged the details",
}


def _operation(
    summary: str, ok: dict[str, Any], body: dict[str, Any] | None = None, error: str = "Error"
) -> dict[str, Any]:
    """An operation answering `ok`, its errors in the schema named `error` (the API's own shape)."""
    responses = {"200": {"description": "OK", **ok}}
    responses.update({code: {"description": text, **_json(_ref(error))} for code, text in ERRORS.items()})
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if body is not None:
        operation["requestBody"] = {"required": True, **body}
    return operation


PRIORITY_HEADER = {
    "name": "Priority",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "examples": ["u=1", "u=6"]},
    "description": "RFC 9218's urgency: u=0 to u=2 high (interactive), u=3 normal (the default), u=4 to u=7 "
    "low (bulk); a priority the body names wins",
}
PRIORITIZED = ("/v1/predict", "/v1/predict/stream", "/v1/classify", "/classify", "/predict", "/")


@functools.cache
def openapi_document() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    message = {m: _ref(_message(getattr(pb, m).DESCRIPTOR, schemas)) for m in (
        "PredictRequest", "PredictResponse", "PredictStreamRequest", "PredictStreamResponse",
        "GetModelInfoResponse",
    )}  # fmt: skip
    schemas.update(_kserve_schemas())
    schemas.update(classify_schemas())
    ndjson = "application/x-ndjson"
    model = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    version = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
    binary = {"schema": {"type": "string", "format": "binary"}}
    infer = _operation(
        "KServe v2 inference; with Inference-Header-Content-Length, binary tensor data follows the JSON",
        {"content": {"application/json": _schema("InferResponse"), "application/octet-stream": binary}},
        {"content": {"application/json": _schema("InferRequest"), "application/octet-stream": binary}},
    )
    html = {"content": {"text/html": {"schema": {"type": "string"}}}}
    page = {"get": _operation("The playground page (no token needed)", html)}
    static = _operation("The playground's script and style (no token needed)", {})
    file = {"name": "file", "in": "path", "required": True, "schema": {"type": "string"}}
    paths: dict[str, Any] = {
        "/static/{file}": {"get": {**static, "parameters": [file]}},
        "/openapi.json": {"get": _operation("This document", _json({"type": "object"}))},
        "/v1/predict": {
            "post": _operation(
                "Predict one or many texts (up to the server's max texts per request)",
                _json(message["PredictResponse"]),
                _json(message["PredictRequest"]),
            )
        },
        "/v1/predict/stream": {
            "post": _operation(
                "Many requests in one call: one PredictStreamRequest per line in, one "
                "PredictStreamResponse per line out, in the order they finish",
                {"content": {ndjson: {"schema": message["PredictStreamResponse"]}}},
                {"content": {ndjson: {"schema": message["PredictStreamRequest"]}}},
            )
        },
        "/v1/model": {
            "get": {
                **_operation(
                    "The served model, the request limits and how the machine is used",
                    _json(message["GetModelInfoResponse"]),
                ),
                "parameters": [{"name": "model_version", "in": "query", "schema": {"type": "integer"}}],
            }
        },  # fmt: skip
        "/v2/health/live": {"get": _operation("The process is up (no token needed)", {})},
        "/v2/health/ready": {"get": _operation("Ready to answer; 503 while starting or draining", {})},
        "/v2": {"get": _operation("Server metadata", _json(_ref("ServerMetadata")))},
        "/v2/repository/index": {
            "post": _operation(
                "Every version under the model directory and its state (READY, UNAVAILABLE) and why",
                _json(_ref("RepositoryIndex")),
            )
        },
    }
    repository_body = _json(_ref("RepositoryRequest"))
    for action, summary in (
        ("load", "Load the versions the version policy chooses (--model-control explicit)"),
        (
            "unload",
            "Unload every version, or the one named by the version parameter (--model-control explicit)",
        ),
    ):
        operation = _operation(summary, {}, repository_body)
        paths[f"/v2/repository/models/{{name}}/{action}"] = {"post": {**operation, "parameters": [model]}}
    versioned = "/v2/models/{name}/versions/{version}"
    for prefix, params in (("/v2/models/{name}", [model]), (versioned, [model, version])):
        metadata = _operation("Model metadata", _json(_ref("ModelMetadata")))
        paths[prefix] = {"get": {**metadata, "parameters": params}}
        ready = _operation("Model ready; 503 when not", {})
        paths[prefix + "/ready"] = {"get": {**ready, "parameters": params}}
        paths[prefix + "/infer"] = {"post": {**infer, "parameters": params}}
    for path, operations in classify_paths(_operation).items():
        paths[path] = {**operations, **(page if path == "/" else {})}
    for path, operations in paths.items():  # every call that queues texts takes a priority
        if path in PRIORITIZED or path.endswith("/infer"):
            post = operations["post"]
            post["parameters"] = [*post.get("parameters", []), PRIORITY_HEADER]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sentiment-service",
            "version": __version__,
            "description": "Sentiment of texts, with the model's attention on request. The same service "
            "answers gRPC (sentiment.v1 and KServe v2) on its gRPC port.",
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{}, {"bearer": []}],
        "paths": paths,
    }
