"""Errors of the sentiment client: one base class, one subclass per decision a caller makes.

SentimentError                 base of everything raised here
├── InvalidInput               the request was wrong (INVALID_ARGUMENT): fix it, do not retry
├── NotFound                   unknown model or version (NOT_FOUND)
├── Unauthenticated            token missing or wrong (UNAUTHENTICATED)
├── Overloaded                 the server's queue was full (RESOURCE_EXHAUSTED): retried, then raised
├── Unavailable                server down, starting or draining (UNAVAILABLE): retried, then raised
├── DeadlineExceeded           the deadline passed (DEADLINE_EXCEEDED)
└── ServerError                anything else (INTERNAL, UNKNOWN, ...)
"""

from __future__ import annotations

import grpc


class SentimentError(Exception):
    """Base of every error raised by the client; `code` is the gRPC status, `details` its message."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.details = message


class InvalidInput(SentimentError):
    """The server refused the request as invalid; the message says which limit or value."""


class NotFound(SentimentError):
    """The model or version does not exist on the server."""


class Unauthenticated(SentimentError):
    """The server needs a bearer token, or the one given is wrong."""


class Overloaded(SentimentError):
    """The server's queue was full, even after retries with backoff."""


class Unavailable(SentimentError):
    """The server could not be reached, or was starting or shutting down, even after retries."""


class DeadlineExceeded(SentimentError):
    """The call's deadline passed before an answer came."""


class Refused(SentimentError):
    """The server would not make the change asked for: a model version failed its checks (what was
    serving is untouched), or it does not load and unload on request (its --model-control)."""


class ServerError(SentimentError):
    """The server failed (INTERNAL) or answered with an unexpected status."""


_BY_CODE: dict[grpc.StatusCode, type[SentimentError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInput,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.RESOURCE_EXHAUSTED: Overloaded,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.FAILED_PRECONDITION: Refused,
}


def from_status(code: grpc.StatusCode, details: str) -> SentimentError:
    """The client error for a gRPC status code and its message."""
    kind = _BY_CODE.get(code, ServerError)
    return kind(f"{code.name}: {details}", code)


def from_rpc_error(error: grpc.RpcError) -> SentimentError:
    """The client error for a failed call."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else str(error)
    return from_status(code, details or "")
