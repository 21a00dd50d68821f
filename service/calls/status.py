"""The one table from the core's errors to what a caller receives, for both doors: grpc/boundary.py and
the HTTP endpoints (http/boundary.py, http/answers.py) read it."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from service.core.errors import (
    DeadlineExpired,
    Forbidden,
    InvalidInput,
    ModelNotFound,
    NotServing,
    PayloadTooLarge,
    QueueFull,
    ReadTimeout,
    RuntimeFailure,
    ServiceError,
    Unauthenticated,
    UnsupportedMediaType,
    VersionRefused,
)


@dataclass(frozen=True)
class Status:
    """A failed request's status: its gRPC code, and the HTTP status of the same failure."""

    grpc: grpc.StatusCode
    http: int


INTERNAL = Status(grpc.StatusCode.INTERNAL, 500)
INTERNAL_MESSAGE = "internal error; the server logged the details"  # what a caller hears of a bug

STATUS: dict[type[ServiceError], Status] = {
    InvalidInput: Status(grpc.StatusCode.INVALID_ARGUMENT, 400),
    UnsupportedMediaType: Status(grpc.StatusCode.INVALID_ARGUMENT, 415),
    PayloadTooLarge: Status(grpc.StatusCode.RESOURCE_EXHAUSTED, 413),
    ReadTimeout: Status(grpc.StatusCode.DEADLINE_EXCEEDED, 408),
    ModelNotFound: Status(grpc.StatusCode.NOT_FOUND, 404),
    VersionRefused: Status(grpc.StatusCode.FAILED_PRECONDITION, 409),
    QueueFull: Status(grpc.StatusCode.RESOURCE_EXHAUSTED, 429),  # HTTP adds Retry-After
    DeadlineExpired: Status(grpc.StatusCode.DEADLINE_EXCEEDED, 504),
    NotServing: Status(grpc.StatusCode.UNAVAILABLE, 503),
    Unauthenticated: Status(grpc.StatusCode.UNAUTHENTICATED, 401),
    Forbidden: Status(grpc.StatusCode.PERMISSION_DENIED, 403),
    RuntimeFailure: INTERNAL,
}


def status_of(err: ServiceError) -> Status:
    """The status of `err`: its own class's row, else its nearest ancestor's (INTERNAL for none)."""
    for kind in type(err).__mro__:
        status = STATUS.get(kind)
        if status is not None:
            return status
    return INTERNAL
