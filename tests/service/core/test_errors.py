"""The core knows nothing of gRPC; one table maps every error to its gRPC code and HTTP status."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc

from service import core as core_package
from service.calls.status import STATUS, status_of
from service.core import errors
from service.grpc.boundary import code_of


def test_the_core_imports_no_grpc() -> None:
    core = sorted(f"service.core.{p.stem}" for p in Path(core_package.__file__).parent.glob("*.py"))
    modules = ", ".join([*core, "service.versions.store", "service.versions.assembly"])
    code = f"import sys; import {modules}; print('grpc' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_every_service_error_has_its_status_code() -> None:
    kinds = {c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.ServiceError)}
    assert kinds - {errors.ServiceError} == set(STATUS)
    assert code_of(errors.QueueFull("full")) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert code_of(errors.NotServing("draining")) == grpc.StatusCode.UNAVAILABLE
    assert len(set(STATUS.values())) == len(STATUS)
    # a kind without its own row takes its nearest ancestor's
    narrower = type("Narrower", (errors.QueueFull,), {})
    assert status_of(narrower("full")).http == 429


def test_http_statuses_are_the_documented_ones() -> None:
    http = {kind.__name__: status.http for kind, status in STATUS.items()}
    assert http == {
        "InvalidInput": 400, "UnsupportedMediaType": 415, "PayloadTooLarge": 413, "ReadTimeout": 408,
        "ModelNotFound": 404, "QueueFull": 429, "DeadlineExpired": 504, "NotServing": 503,
        "Unauthenticated": 401, "RuntimeFailure": 500, "VersionRefused": 409, "Forbidden": 403,
    }  # fmt: skip


def test_a_message_quotes_any_value_a_caller_can_send() -> None:
    deep: list[object] = []
    inner = deep
    for _ in range(5000):  # past the recursion limit
        inner.append([])
        inner = inner[0]  # type: ignore[assignment]
    assert errors.quoted(deep) == "[[[[...]]]]"
    nested: dict[str, object] = {}
    member = nested
    for _ in range(5000):
        member["a"] = member = {}
    assert errors.quoted(nested) == "a dict too large to show"
    assert errors.quoted(json.loads("1" * 4300)).endswith("(4300 characters)")
    assert errors.quoted([1, "two", [3]]) == "[1, 'two', [3]]"
