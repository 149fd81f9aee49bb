"""Token buckets per key (a client address, a homeserver name), so that no caller can make the
focus do unbounded work: each token request may cost a lookup at a remote homeserver.

Pure logic: the caller passes the time, so the limits are tested with simulated time.
"""

from __future__ import annotations

from dataclasses import dataclass
import math

from .errors import FocusError

MAX_KEYS = 10_000


class RateLimited(FocusError):
    """Too many requests from one client, or for one homeserver; try again later."""

    status = 429
    errcode = "M_LIMIT_EXCEEDED"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_ms = max(1, math.ceil(retry_after_s * 1000))


@dataclass
class TokenBucket:
    """``capacity`` requests at once, refilled at ``rate`` requests per second."""

    capacity: float
    rate: float
    tokens: float
    updated: float

    @classmethod
    def full(cls, capacity: float, rate: float, now: float) -> TokenBucket:
        return cls(capacity, rate, capacity, now)

    def refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
        self.updated = max(self.updated, now)

    def take(self, now: float) -> float:
        """Take one token: 0 if granted, else the seconds until one is available."""
        self.refill(now)
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate

    def is_full(self, now: float) -> bool:
        self.refill(now)
        return self.tokens >= self.capacity


class RateLimiter:
    """One bucket per key, ``per_minute`` requests a minute with bursts of as many.

    ``per_minute`` 0 turns the limit off. Keys are chosen by callers (anyone on the internet),
    so at most ``max_keys`` buckets are kept: full buckets are forgotten first (they hold no
    state worth keeping), then the longest unused ones.
    """

    def __init__(self, per_minute: int, max_keys: int = MAX_KEYS) -> None:
        if per_minute < 0:
            raise ValueError("per_minute must not be negative")
        self.per_minute = per_minute
        self.max_keys = max_keys
        self._buckets: dict[str, TokenBucket] = {}

    def check(self, key: str, now: float) -> float:
        """Count one request for ``key``: 0 if allowed, else the seconds to wait."""
        if self.per_minute == 0:
            return 0.0
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            self._make_room(now)
            bucket = TokenBucket.full(self.per_minute, self.per_minute / 60, now)
        self._buckets[key] = bucket  # re-inserted: the dict is in order of last use
        return bucket.take(now)

    def _make_room(self, now: float) -> None:
        if len(self._buckets) < self.max_keys:
            return
        for key in [key for key, bucket in self._buckets.items() if bucket.is_full(now)]:
            del self._buckets[key]
        while len(self._buckets) >= self.max_keys:
            del self._buckets[next(iter(self._buckets))]

    def __len__(self) -> int:
        return len(self._buckets)
