"""Status codes become SDK exceptions; only UNAVAILABLE and RESOURCE_EXHAUSTED are retried."""

from __future__ import annotations

import grpc
import pytest

from sentiment_client import (
    DeadlineExceeded,
    InvalidInput,
    NotFound,
    Overloaded,
    RetryPolicy,
    SentimentError,
    ServerError,
    Unauthenticated,
    Unavailable,
)
from sentiment_client.errors import from_status


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidInput),
        (grpc.StatusCode.NOT_FOUND, NotFound),
        (grpc.StatusCode.UNAUTHENTICATED, Unauthenticated),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, Overloaded),
        (grpc.StatusCode.UNAVAILABLE, Unavailable),
        (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceeded),
        (grpc.StatusCode.INTERNAL, ServerError),
        (grpc.StatusCode.UNKNOWN, ServerError),
    ],
)
def test_each_status_has_its_exception(code: grpc.StatusCode, kind: type[SentimentError]) -> None:
    error = from_status(code, "the reason")
    assert type(error) is kind and isinstance(error, SentimentError)
    assert error.code == code and str(error) == f"{code.name}: the reason"


def test_retry_policy_retries_only_transient_codes_with_bounded_jittered_backoff() -> None:
    policy = RetryPolicy(max_attempts=4, initial_backoff_s=0.1, max_backoff_s=0.3)
    assert policy.should_retry(grpc.StatusCode.UNAVAILABLE, 1)
    assert policy.should_retry(grpc.StatusCode.RESOURCE_EXHAUSTED, 3)
    assert policy.should_retry(grpc.StatusCode.CANCELLED, 2)  # only the server side cancels
    assert not policy.should_retry(grpc.StatusCode.UNAVAILABLE, 4)
    for code in (
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
    ):
        assert not policy.should_retry(code, 1)
    delays = [policy.delay(attempt) for attempt in (1, 2, 5) for _ in range(200)]
    assert all(0 <= d <= 0.3 for d in delays)
    assert len({round(d, 6) for d in delays}) > 100  # jittered, not fixed
    assert max(policy.delay(1) for _ in range(200)) <= 0.1
