"""The service's errors, each carrying the gRPC status code it is answered with.

ServiceError
├── InvalidInput       INVALID_ARGUMENT
├── ModelNotFound      NOT_FOUND
├── QueueFull          RESOURCE_EXHAUSTED
├── DeadlineExpired    DEADLINE_EXCEEDED
├── NotServing         UNAVAILABLE
├── Unauthenticated    UNAUTHENTICATED
└── RuntimeFailure     INTERNAL
"""

from __future__ import annotations

import grpc


class ServiceError(Exception):
    """An error a caller is told about, with a message a person understands."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class ModelNotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND


class QueueFull(ServiceError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class DeadlineExpired(ServiceError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotServing(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE


class Unauthenticated(ServiceError):
    code = grpc.StatusCode.UNAUTHENTICATED


class RuntimeFailure(ServiceError):
    code = grpc.StatusCode.INTERNAL


class ModelDirectoryError(Exception):
    """The model directory is missing, corrupt or breaks the contract: the server cannot start."""
