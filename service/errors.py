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


class StartupError(Exception):
    """The server cannot start as configured: the message names the setting or file, what was wrong
    and what is allowed, on one line."""


class ModelDirectoryError(StartupError):
    """The model directory is missing, corrupt or breaks the contract: the server cannot start."""


def quoted(value: object, limit: int = 40) -> str:
    """`value` for an error message: its repr, or, when longer than `limit` characters, the start of
    it and its length, so that a message never echoes a caller's input whole. A list or tuple is
    quoted element by element, its first few only."""
    if isinstance(value, list | tuple):
        shown = [quoted(element, limit) for element in value[:LISTED]]
        more = f", and {len(value) - LISTED} more" if len(value) > LISTED else ""
        return f"[{', '.join(shown)}{more}]"
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return repr(text) if isinstance(value, str) else text
    return f"{text[:limit]!r}... ({len(text)} characters)"


LISTED = 4  # elements of a list that an error message quotes
