"""A small, bounded in-memory cache whose entries expire; callers choose each entry's lifetime."""

from __future__ import annotations

from typing import Generic, TypeVar
import time

K = TypeVar("K")
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """Bounded so that callers choosing the keys (anyone on the internet) cannot exhaust memory:
    when full, expired entries go first, then the oldest."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if time.monotonic() >= expires:
            del self._entries[key]
            return None
        return value

    def put(self, key: K, value: V, ttl_s: float) -> None:
        self._entries.pop(key, None)
        if len(self._entries) >= self.max_entries:
            now = time.monotonic()
            for stale in [k for k, (expires, _) in self._entries.items() if expires <= now]:
                del self._entries[stale]
            while len(self._entries) >= self.max_entries:
                del self._entries[next(iter(self._entries))]
        self._entries[key] = (time.monotonic() + ttl_s, value)

    def __len__(self) -> int:
        return len(self._entries)
