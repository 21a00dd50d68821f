"""Retries with exponential backoff and full jitter, for UNAVAILABLE and RESOURCE_EXHAUSTED only."""

from __future__ import annotations

import random
from dataclasses import dataclass

import grpc

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry a call the server could not take."""

    max_attempts: int = 5
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 2.0
    multiplier: float = 2.0

    def delay(self, attempt: int) -> float:
        """Seconds to sleep before attempt number `attempt + 1` (attempt counts from 1)."""
        ceiling = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (attempt - 1))
        return random.uniform(0, ceiling)

    def should_retry(self, code: grpc.StatusCode | None, attempt: int) -> bool:
        return code in RETRYABLE and attempt < self.max_attempts


NO_RETRY = RetryPolicy(max_attempts=1)
