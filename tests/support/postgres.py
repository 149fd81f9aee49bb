"""Throwaway databases for tests: SQLite files, and PostgreSQL databases.

The server is taken from BRIDGE_TEST_POSTGRES_URL (default: the local server on
127.0.0.1:5432, user postgres, trust auth). A missing server fails the tests loudly; it is
never a reason to skip them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
import os
import uuid

from yarl import URL
import asyncpg

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/postgres"


def server_url() -> str:
    return os.environ.get("BRIDGE_TEST_POSTGRES_URL", DEFAULT_URL)


@asynccontextmanager
async def fresh_database() -> AsyncIterator[str]:
    """Create an empty database, yield its URL, drop it afterwards."""
    admin_url = server_url()
    name = f"bridge_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = await asyncpg.connect(admin_url, timeout=10)
    except (OSError, asyncpg.PostgresError) as e:
        raise RuntimeError(
            f"PostgreSQL is needed for these tests but is not reachable ({e}). Start it, or "
            "point BRIDGE_TEST_POSTGRES_URL at a server where this user may create databases."
        ) from e
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        yield str(URL(admin_url).with_path(f"/{name}"))
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


BACKENDS = ("sqlite", "postgres")


@asynccontextmanager
async def empty_database(backend: str, directory: Path) -> AsyncIterator[str]:
    """A new, empty database of either backend; yields its URL."""
    if backend == "sqlite":
        yield f"sqlite:{directory / f'bridge-{uuid.uuid4().hex[:8]}.db'}"
    else:
        async with fresh_database() as url:
            yield url
