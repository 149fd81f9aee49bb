"""Failed database queries are counted for the metrics, on both backends; the constraint
violations the bridge provokes on purpose are not."""

from __future__ import annotations

from mautrix.util.async_db import Database
import pytest

from bridge.metrics import count_database_errors
from bridge.metrics.instruments import REGISTRY


def errors() -> float:
    return REGISTRY.get_sample_value("bridge_database_errors_total") or 0.0


async def test_failed_queries_are_counted(database_url: str) -> None:
    db = Database.create(database_url)
    count_database_errors(db)
    await db.start()
    try:
        await db.execute("CREATE TABLE counted (id INTEGER PRIMARY KEY)")
        await db.execute("INSERT INTO counted (id) VALUES (1)")
        before = errors()
        with pytest.raises(Exception):  # noqa: B017 - each backend raises its own
            await db.execute("INSERT INTO counted (id) VALUES (1)")
        assert errors() == before  # a duplicate key is an answer, not a failure
        for query in (db.fetch, db.fetchrow, db.fetchval, db.execute):
            with pytest.raises(Exception):  # noqa: B017
                await query("SELECT * FROM no_such_table")
        assert errors() == before + 4
        assert await db.fetchval("SELECT COUNT(*) FROM counted") == 1
        assert errors() == before + 4
    finally:
        await db.stop()
