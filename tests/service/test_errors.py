"""The core knows nothing of gRPC; the servicer boundary maps every error to one status code."""

from __future__ import annotations

import subprocess
import sys

import grpc

from service import errors
from service.servicers._boundary import STATUS, code_of


def test_the_core_imports_no_grpc() -> None:
    core = (
        "service.fair_queue, service.batcher, service.runtime, service.preprocess, service.model_store, "
        "service.attention, service.results, service.postprocess, service.answer_size, service.assembly"
    )
    code = f"import sys; import {core}, service.engine, service.errors; print('grpc' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_every_service_error_has_its_status_code() -> None:
    kinds = {c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.ServiceError)}
    assert kinds - {errors.ServiceError} == set(STATUS)
    assert code_of(errors.QueueFull("full")) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert code_of(errors.NotServing("draining")) == grpc.StatusCode.UNAVAILABLE
    assert len(set(STATUS.values())) == len(STATUS)
