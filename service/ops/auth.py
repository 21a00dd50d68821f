"""The bearer-token check, for any transport: gRPC metadata and HTTP headers alike."""

from __future__ import annotations

import hmac
from collections.abc import Sequence


def bearer_refusal(given: Sequence[str | bytes], expected: bytes) -> str | None:
    """Why a request carrying the authorization header values `given` is refused, or None when it
    carries `Bearer <expected>`. The scheme is case-insensitive (RFC 6750); two headers are refused,
    whatever they say."""
    if not given:
        return "this server needs `authorization: Bearer <token>`"
    if len(given) > 1:
        return f"the request has {len(given)} authorization headers; send one"
    value = given[0].encode() if isinstance(given[0], str) else bytes(given[0])
    scheme, _, token = value.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return "the authorization header must be `Bearer <token>`"
    return None if hmac.compare_digest(token.strip(), expected) else "the bearer token is wrong"
