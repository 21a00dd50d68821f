"""Retries with exponential backoff and full jitter, for the codes that say "not now, not here".

UNAVAILABLE (starting, draining, unreachable) and RESOURCE_EXHAUSTED (queue full) are retried, and
CANCELLED: this client never cancels a call it is waiting for (a deadline ends as
DEADLINE_EXCEEDED, an asyncio cancellation as CancelledError), so a CANCELLED status comes from the
other side, e.g. a server that closes its listener just as the call reaches it. Every call of the
API is a read, so sending it again is safe.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import grpc

RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED}
)


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
