"""Delegated leave jobs in the database, on SQLite and PostgreSQL: what a restart finds."""

from __future__ import annotations

from dataclasses import replace

from mautrix.util.async_db import Database
import pytest

from bridge.db import DelegatedLeave

JOB = DelegatedLeave(
    conference_id="conf",
    identity="hashed",
    legacy_identity="@a:hs:DEV",
    user_id="@a:hs",
    delay_id="syd_one",
    delay_ms=None,
    phase="connected",
    due_ms=1_800_000_000_000,
    expires_ms=1_800_003_600_000,
    give_up_ms=0,
)


@pytest.fixture
def db(bridge_db: Database) -> Database:
    return bridge_db


async def test_a_job_is_saved_updated_and_deleted(db: Database) -> None:
    await JOB.save()
    assert await DelegatedLeave.all() == [JOB]
    later = replace(JOB, delay_ms=3_600_000, phase="sending", due_ms=JOB.due_ms + 5)
    await later.save()
    assert await DelegatedLeave.all() == [later]
    await later.delete()
    assert await DelegatedLeave.all() == []


async def test_a_new_delegation_replaces_the_member_s_old_one(db: Database) -> None:
    await JOB.save()
    newer = replace(JOB, delay_id="syd_two")
    await newer.save()
    assert await DelegatedLeave.all() == [newer]
    # The old job finishing late does not take the new one with it.
    await JOB.delete()
    assert await DelegatedLeave.all() == [newer]
    other = replace(JOB, identity="other")
    await other.save()
    assert len(await DelegatedLeave.all()) == 2


def test_the_delay_id_is_not_shown() -> None:
    assert "syd_one" not in repr(JOB)
