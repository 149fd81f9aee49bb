"""Room access from Matrix state, on mautrix's real state store (SQLite): membership, bans,
power levels, and rooms the bot is not in."""

from __future__ import annotations

from typing import Any
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

from mautrix.appservice.state_store.asyncpg import PgASStateStore
from mautrix.types import (
    Member,
    Membership,
    PowerLevelStateEventContent,
    RoomID,
    StateEvent,
    UserID,
)
from mautrix.util.async_db import Database
import pytest

from bridge.focus.access import Access, RoomAccess, RoomsWithoutBot
from bridge.focus.errors import Forbidden
from bridge.permissions import PermissionLevel
from bridge.room_state import RoomStates

ROOM = RoomID("!room:example.org")
BOT = UserID("@callbot:example.org")
ALICE, BOB, EVE = (UserID(f"@{n}:example.org") for n in ("alice", "bob", "eve"))
REMOTE = UserID("@carol:remote.example")
MALLORY = UserID("@mallory:example.org")
PERMISSIONS = {
    "example.org": PermissionLevel.USER,
    "remote.example": PermissionLevel.USER,
    MALLORY: PermissionLevel.NONE,
}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[PgASStateStore]:
    db = Database.create(
        f"sqlite:{tmp_path / 'state.db'}", upgrade_table=PgASStateStore.upgrade_table
    )
    await db.start()
    try:
        yield PgASStateStore(db)
    finally:
        await db.stop()


def access(
    store: PgASStateStore,
    policy: RoomsWithoutBot = RoomsWithoutBot.DENY,
    permissions: dict[str, PermissionLevel] = PERMISSIONS,
) -> RoomAccess:
    az: Any = SimpleNamespace(state_store=store)
    return RoomAccess(RoomStates(az), BOT, policy, permissions)


async def set_room(
    store: PgASStateStore,
    members: dict[UserID, Membership],
    power_levels: Any,
    room_version: str = "10",
) -> None:
    """The state a full load leaves in the store: create event, power levels, all members."""
    create: Any = {
        "type": "m.room.create",
        "room_id": ROOM,
        "sender": ALICE,
        "state_key": "",
        "event_id": "$create",
        "origin_server_ts": 0,
        "content": {"room_version": room_version},
    }
    await store.set_create(StateEvent.deserialize(create))
    if power_levels is not None:
        await store.set_power_levels(ROOM, PowerLevelStateEventContent.deserialize(power_levels))
    await store.set_members(
        ROOM, {user: Member(membership=m) for user, m in {BOT: Membership.JOIN, **members}.items()}
    )


EVERYONE = {
    ALICE: Membership.JOIN,
    BOB: Membership.JOIN,
    REMOTE: Membership.JOIN,
    MALLORY: Membership.JOIN,
    EVE: Membership.BAN,
}


async def test_members_of_any_server_join_and_publish(store: PgASStateStore) -> None:
    levels = {"users": {ALICE: 100}, "events": {"org.matrix.msc3401.call.member": 0}}
    await set_room(store, EVERYONE, levels)
    for user in (ALICE, BOB, REMOTE):
        assert await access(store).check(ROOM, user) == Access(can_publish=True)


async def test_bridge_permissions_apply_in_rooms_with_the_bot(store: PgASStateStore) -> None:
    """Members the admin did not allow to use the bridge (level none, or a server that is
    not listed) neither join nor publish, whatever the room's power levels say."""
    levels = {"users": {ALICE: 100, MALLORY: 100}, "events": {"org.matrix.msc3401.call.member": 0}}
    await set_room(store, EVERYONE, levels)
    local_only = access(store, permissions={"example.org": PermissionLevel.USER})
    for user, gate in ((MALLORY, access(store)), (REMOTE, local_only)):
        with pytest.raises(Forbidden, match="not available to you"):
            await gate.check(ROOM, user)
        assert not await gate.may_publish(ROOM, user)
    assert await local_only.may_publish(ROOM, BOB)


async def test_banned_and_absent_users_are_refused(store: PgASStateStore) -> None:
    await set_room(store, {**EVERYONE, BOB: Membership.INVITE}, {"users": {ALICE: 100}})
    with pytest.raises(Forbidden, match="banned"):
        await access(store).check(ROOM, EVE)
    for outsider in (BOB, UserID("@stranger:example.org")):
        with pytest.raises(Forbidden, match="Only members"):
            await access(store).check(ROOM, outsider)


async def test_power_levels_decide_who_publishes(store: PgASStateStore) -> None:
    """state_default 50 applies to call memberships unless the room lowers it for them."""
    await set_room(store, EVERYONE, {"users": {ALICE: 100, BOB: 50}})
    assert await access(store).check(ROOM, ALICE) == Access(can_publish=True)
    assert await access(store).check(ROOM, BOB) == Access(can_publish=True)
    assert await access(store).check(ROOM, REMOTE) == Access(can_publish=False)

    await set_room(
        store, EVERYONE, {"users": {ALICE: 100}, "events": {"org.matrix.msc3401.call.member": 75}}
    )
    assert await access(store).check(ROOM, BOB) == Access(can_publish=False)


async def test_room_without_power_levels_uses_the_spec_defaults(store: PgASStateStore) -> None:
    await set_room(store, EVERYONE, power_levels=None)
    assert await access(store).check(ROOM, BOB) == Access(can_publish=True)


async def test_creators_of_v12_rooms_always_publish(store: PgASStateStore) -> None:
    await set_room(
        store,
        EVERYONE,
        {"users": {}, "events": {"org.matrix.msc3401.call.member": 100}},
        room_version="12",
    )
    assert await access(store).check(ROOM, ALICE) == Access(can_publish=True)
    assert await access(store).check(ROOM, BOB) == Access(can_publish=False)


async def test_rooms_without_the_bot_are_refused_by_default(store: PgASStateStore) -> None:
    await set_room(store, EVERYONE, {"users": {ALICE: 100}})
    await store.set_membership(ROOM, BOT, Membership.LEAVE)
    with pytest.raises(Forbidden, match=f"Invite {BOT}"):
        await access(store).check(ROOM, ALICE)
    with pytest.raises(Forbidden, match="not in this room"):
        await access(store).check(RoomID("!unknown:example.org"), ALICE)


async def test_rooms_without_the_bot_can_follow_bridge_permissions(
    store: PgASStateStore,
) -> None:
    """The lk-jwt-service-like mode: permitted users publish, with no room check at all."""
    lenient = access(store, RoomsWithoutBot.BRIDGE_PERMISSIONS)
    unknown = RoomID("!unknown:example.org")
    assert await lenient.check(unknown, BOB) == Access(can_publish=True)
    with pytest.raises(Forbidden, match="not in this room"):
        await lenient.check(unknown, MALLORY)
