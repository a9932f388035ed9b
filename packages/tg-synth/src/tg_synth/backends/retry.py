"""Exponential backoff with full jitter: the wait before attempt k+1 is uniform in [0, min(cap, base * 2^k)].

Jitter spreads retries of many concurrent calls apart, so a rate-limited endpoint is not hit again
by all of them at the same instant. A server's Retry-After is honoured as a lower bound.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

RETRY_STATUS = frozenset({408, 409, 425, 429})


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    base_s: float = 0.5
    max_s: float = 30.0

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt`` (0-based)."""
        ceiling = min(self.max_s, self.base_s * (2**attempt))
        wait = rng.uniform(0.0, ceiling)
        if retry_after is not None:
            wait = max(wait, min(float(retry_after), self.max_s))
        return wait


def is_retryable_status(status: int) -> bool:
    return status in RETRY_STATUS or status >= 500


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header given in seconds (HTTP dates are ignored)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None
