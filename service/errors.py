"""The service's errors. They know nothing of any transport: the servicer boundary
(service/servicers/_boundary.py) holds the one table from error to gRPC status code.

ServiceError
├── InvalidInput       the request can never succeed as it is
├── ModelNotFound      no such model or version
├── QueueFull          overloaded now: retry later
├── DeadlineExpired    the caller's deadline passed
├── NotServing         starting up or draining: retry elsewhere
├── Unauthenticated    no or wrong credentials
└── RuntimeFailure     the model failed on a batch
"""

from __future__ import annotations


class ServiceError(Exception):
    """An error a caller is told about, with a message a person understands."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ServiceError):
    """The request can never succeed as it is (INVALID_ARGUMENT)."""


class ModelNotFound(ServiceError):
    """No such model or version (NOT_FOUND)."""


class QueueFull(ServiceError):
    """Overloaded now: retry later (RESOURCE_EXHAUSTED)."""


class DeadlineExpired(ServiceError):
    """The caller's deadline passed before the work was done (DEADLINE_EXCEEDED)."""


class NotServing(ServiceError):
    """Starting up or draining: retry, elsewhere if possible (UNAVAILABLE)."""


class Unauthenticated(ServiceError):
    """No credentials, or wrong ones (UNAUTHENTICATED)."""


class RuntimeFailure(ServiceError):
    """The model failed on the batch holding the text (INTERNAL)."""


class ModelDirectoryError(Exception):
    """The model directory is missing, corrupt or breaks the contract: the server cannot start."""
