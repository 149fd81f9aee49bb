"""Moderation rows on SQLite and PostgreSQL: call modes, removals with expiry, the action log
and its retention."""

from __future__ import annotations

from mautrix.types import RoomID
from mautrix.util.async_db import Database
import pytest

from bridge.db import (
    Call,
    CallRemoval,
    ModerationAction,
    Room,
    RoomMode,
    RoomModeName,
)

ROOM = RoomID("!moderated:example.org")
BOB = "@bob:example.org"
MOD = "@mod:example.org"


@pytest.fixture
async def db(bridge_db: Database) -> Database:
    await Room.get_or_create(ROOM)
    return bridge_db


async def test_modes_switch_once(db: Database) -> None:
    assert not await RoomMode.is_on(ROOM, RoomModeName.LOCKED)
    assert await RoomMode.set(ROOM, RoomModeName.LOCKED, True, MOD, 1)
    assert not await RoomMode.set(ROOM, RoomModeName.LOCKED, True, MOD, 2)
    assert await RoomMode.is_on(ROOM, RoomModeName.LOCKED)
    assert not await RoomMode.is_on(ROOM, RoomModeName.MODERATED)
    assert await RoomMode.set(ROOM, RoomModeName.LOCKED, False, MOD, 3)
    assert not await RoomMode.set(ROOM, RoomModeName.LOCKED, False, MOD, 4)
    assert not await RoomMode.is_on(ROOM, RoomModeName.LOCKED)


async def test_removals_expire_and_a_later_one_replaces_the_earlier(db: Database) -> None:
    await CallRemoval(ROOM, BOB, 1_000, MOD, "first").save()
    assert (await CallRemoval.active(ROOM, BOB, 999)).reason == "first"  # type: ignore[union-attr]
    assert await CallRemoval.active(ROOM, BOB, 1_000) is None
    assert await CallRemoval.active(ROOM, "@carol:example.org", 0) is None
    await CallRemoval(ROOM, BOB, 5_000, MOD, "again").save()
    assert await CallRemoval.active(ROOM, BOB, 2_000) == CallRemoval(
        ROOM, BOB, 5_000, MOD, "again"
    )
    await CallRemoval.delete_expired(5_000)
    assert await CallRemoval.active(ROOM, BOB, 0) is None


async def test_actions_belong_to_their_call_and_follow_its_retention(db: Database) -> None:
    call = await Call.start(ROOM, 1_000)
    mute = ModerationAction(ROOM, call.call_id, MOD, "mute", BOB, "Muted", 1_500)
    lock = ModerationAction(ROOM, None, MOD, "locked on", None, "Locked", 500)
    for action in (mute, lock):
        await action.insert()
    assert await ModerationAction.of_call(call.call_id) == [mute]

    await call.end(2_000)
    await Call.delete_ended_before(3_000)
    await ModerationAction.delete_before(3_000)
    assert await ModerationAction.of_call(call.call_id) == []
    assert await db.fetchval("SELECT COUNT(*) FROM moderation_action") == 0
