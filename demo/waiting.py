"""Bounded waiting for conditions in integration tests (no wall-clock assertions)."""

from __future__ import annotations

from typing import TypeVar
from collections.abc import Awaitable, Callable
import asyncio
import time

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T | None]], *, timeout: float = 30.0, interval: float = 0.2
) -> T:
    """Poll ``probe`` until it returns something truthy; fail with its last result otherwise."""
    deadline = time.monotonic() + timeout
    result: T | None = None
    while time.monotonic() < deadline:
        result = await probe()
        if result:
            return result
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s (last result: {result!r})")
