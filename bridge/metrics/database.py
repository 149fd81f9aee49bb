"""Counting failed database queries, for every table and the appservice's state store alike."""

from __future__ import annotations

from typing import Any
from collections.abc import Awaitable, Callable
import functools
import sqlite3

from mautrix.util.async_db import Database
import asyncpg

from .instruments import DATABASE_ERRORS

_QUERIES = ("execute", "executemany", "fetch", "fetchrow", "fetchval")
_EXPECTED = (asyncpg.IntegrityConstraintViolationError, sqlite3.IntegrityError)
"""Violations some queries provoke on purpose (insert, or find the row another insert made)."""


def count_database_errors(db: Database) -> None:
    """Make every query of ``db`` count its failures in ``bridge_database_errors_total``."""
    for name in _QUERIES:
        setattr(db, name, _counted(getattr(db, name)))


def _counted(query: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(query)
    async def counted(*args: Any, **kwargs: Any) -> Any:
        try:
            return await query(*args, **kwargs)
        except _EXPECTED:
            raise
        except Exception:
            DATABASE_ERRORS.inc()
            raise

    return counted
