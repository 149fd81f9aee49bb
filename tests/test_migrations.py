"""Schema migrations on SQLite and PostgreSQL: from empty, from every earlier version, and a
database newer than the code."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from mautrix.types import RoomID
from mautrix.util.async_db import Database, UnsupportedDatabaseVersion
import pytest

from bridge import resources
from bridge.db import Room, build_upgrade_table, init
from bridge.db.upgrade import VERSION_TABLE, split_statements

from .support.postgres import BACKENDS, empty_database

LATEST = len(resources.migration_files())


@asynccontextmanager
async def opened(url: str, up_to: int | None = None) -> AsyncIterator[Database]:
    db = Database.create(url, upgrade_table=build_upgrade_table(up_to))
    try:
        await db.start()
        yield db
    finally:
        await db.stop()


async def schema_of(db: Database) -> set[tuple[str, str]]:
    """(table, column) pairs of the bridge's tables, comparable across upgrade paths."""
    if db.scheme.value == "sqlite":
        tables = [
            row["name"]
            for row in await db.fetch(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        return {
            (table, row["name"])
            for table in tables
            for row in await db.fetch(f"PRAGMA table_info({table})")
        }
    rows = await db.fetch(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = 'public'"
    )
    return {(row["table_name"], row["column_name"]) for row in rows}


async def version_of(db: Database) -> int:
    return int(await db.fetchval(f"SELECT version FROM {VERSION_TABLE}"))


def test_migration_files_split_into_statements() -> None:
    for name, sql in resources.migration_files():
        statements = split_statements(sql)
        assert statements, name
        assert all(not stmt.endswith(";") and "--" not in stmt for stmt in statements)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_migrate_from_empty(backend: str, tmp_path: Path) -> None:
    async with empty_database(backend, tmp_path) as url, opened(url) as db:
        assert await version_of(db) == LATEST
        init(db)
        room = await Room.get_or_create(RoomID("!a:example.org"))
        assert (await Room.get_or_create(room.room_id)).conference_id == room.conference_id
        assert {"room", "call", "call_participant", "processed_event"} <= {
            table for table, _ in await schema_of(db)
        }


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("start_version", range(1, LATEST))
async def test_migrate_from_each_earlier_version(
    backend: str, start_version: int, tmp_path: Path
) -> None:
    async with empty_database(backend, tmp_path) as url, opened(url) as db:
        expected = await schema_of(db)
    async with empty_database(backend, tmp_path) as url:
        async with opened(url, up_to=start_version) as db:
            assert await version_of(db) == start_version
            await db.execute(
                "INSERT INTO room (room_id, conference_id, created_at) VALUES ($1, $2, $3)",
                "!kept:example.org",
                "conf-kept",
                1,
            )
        async with opened(url) as db:
            assert await version_of(db) == LATEST
            assert await schema_of(db) == expected
            kept = await db.fetchval(
                "SELECT conference_id FROM room WHERE room_id=$1", "!kept:example.org"
            )
            assert kept == "conf-kept"


@pytest.mark.parametrize("backend", BACKENDS)
async def test_database_newer_than_code_is_refused(backend: str, tmp_path: Path) -> None:
    async with empty_database(backend, tmp_path) as url:
        async with opened(url) as db:
            await db.execute(f"UPDATE {VERSION_TABLE} SET version = $1", LATEST + 1)
        with pytest.raises(UnsupportedDatabaseVersion):
            async with opened(url):
                pass
        untouched = Database.create(url)  # no upgrade table: just look
        try:
            await untouched.start()
            assert await version_of(untouched) == LATEST + 1
        finally:
            await untouched.stop()
