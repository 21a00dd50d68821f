"""The service's errors. They know nothing of any transport: calls/status.py holds the one table from
error to gRPC status code and HTTP status, which both doors read.

ServiceError
├── InvalidInput       the request can never succeed as it is
│   └── UnsupportedMediaType   an HTTP body of a content type the endpoint does not take
├── PayloadTooLarge    a request body over the size limit (HTTP; gRPC's transport refuses its own)
├── ReadTimeout        the caller sent its request too slowly (HTTP)
├── ModelNotFound      no such model or version
├── VersionRefused     a version cannot be loaded or unloaded as asked (its checks, the model control)
├── QueueFull          overloaded now: retry later
├── DeadlineExpired    the caller's deadline passed
├── NotServing         starting up or draining: retry elsewhere
├── Unauthenticated    no or wrong credentials
├── Forbidden          a browser request from another site, or under a Host name not allowed (HTTP)
└── RuntimeFailure     the model failed on a batch

StartupError           the server cannot start as configured (outside the tree: no caller hears it)
└── ModelDirectoryError   a model directory breaks the contract
"""

from __future__ import annotations


class ServiceError(Exception):
    """An error a caller is told about, with a message a person understands."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(ServiceError):
    """The request can never succeed as it is (INVALID_ARGUMENT)."""


class UnsupportedMediaType(InvalidInput):
    """An HTTP body whose content type or encoding the endpoint does not take."""


class PayloadTooLarge(ServiceError):
    """A request body larger than the server accepts; refused before it is read."""


class ReadTimeout(ServiceError):
    """The request was not received whole in time (a slow or stalled sender)."""


class ModelNotFound(ServiceError):
    """No such model or version (NOT_FOUND)."""


class VersionRefused(ServiceError):
    """A model version failed its checks and was not loaded, or the change asked for is not allowed in
    this server's model control mode (FAILED_PRECONDITION)."""


class QueueFull(ServiceError):
    """Overloaded now: retry later (RESOURCE_EXHAUSTED)."""


class DeadlineExpired(ServiceError):
    """The caller's deadline passed before the work was done (DEADLINE_EXCEEDED)."""


class NotServing(ServiceError):
    """Starting up or draining: retry, elsewhere if possible (UNAVAILABLE)."""


class Unauthenticated(ServiceError):
    """No credentials, or wrong ones (UNAUTHENTICATED)."""


class Forbidden(ServiceError):
    """A request this server never takes from where it came: a browser's from another site's page,
    or one that changes the served models under an unknown Host name (PERMISSION_DENIED)."""


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
    return _quoted(value, limit, LISTED_DEPTH)


def _quoted(value: object, limit: int, depth: int) -> str:
    if isinstance(value, list | tuple):
        if depth == 0:
            return "[...]"
        shown = [_quoted(element, limit, depth - 1) for element in value[:LISTED]]
        more = f", and {len(value) - LISTED} more" if len(value) > LISTED else ""
        return f"[{', '.join(shown)}{more}]"
    try:
        text = value if isinstance(value, str) else repr(value)
    except (RecursionError, ValueError):  # nested past the recursion limit; an integer of 4300+ digits
        return f"a {type(value).__name__} too large to show"
    if len(text) <= limit:
        return repr(text) if isinstance(value, str) else text
    return f"{text[:limit]!r}... ({len(text)} characters)"


LISTED = 4  # elements of a list that an error message quotes
LISTED_DEPTH = 3  # levels of nested lists it opens
