"""Loading a room's full state: shared between callers, and retried when it races with a
member event a transaction stores at the same moment."""

from __future__ import annotations

from typing import Any
import asyncio

from mautrix.types import EventType, Membership, MemberStateEventContent, RoomID, StateEvent
import asyncpg
import pytest

from bridge.room_state import LOAD_ATTEMPTS, RoomStates

ROOM = RoomID("!room:example.org")


class Intent:
    def __init__(self) -> None:
        self.calls = 0

    async def get_state(self, room_id: RoomID) -> list[StateEvent]:
        self.calls += 1
        await asyncio.sleep(0)
        content = MemberStateEventContent(membership=Membership.JOIN)
        return [
            StateEvent(
                type=EventType.ROOM_MEMBER,
                room_id=room_id,
                event_id="$e",  # type: ignore[arg-type]
                sender="@alice:example.org",  # type: ignore[arg-type]
                timestamp=0,
                state_key="@alice:example.org",
                content=content,
            )
        ]


class Store:
    """Fails the first ``failures`` loads as a racing upsert would."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.members: dict[str, Any] = {}

    async def set_members(self, room_id: RoomID, members: dict[str, Any]) -> None:
        if self.failures:
            self.failures -= 1
            raise asyncpg.UniqueViolationError("duplicate key value")
        self.members = members


class AppService:
    def __init__(self, failures: int) -> None:
        self.intent = Intent()
        self.state_store = Store(failures)


async def test_a_load_that_loses_the_race_is_retried() -> None:
    az = AppService(failures=LOAD_ATTEMPTS - 1)
    await RoomStates(az).load(ROOM)  # type: ignore[arg-type]
    assert list(az.state_store.members) == ["@alice:example.org"]


async def test_a_load_that_keeps_failing_fails_loudly() -> None:
    az = AppService(failures=LOAD_ATTEMPTS)
    with pytest.raises(asyncpg.UniqueViolationError):
        await RoomStates(az).load(ROOM)  # type: ignore[arg-type]


async def test_simultaneous_loads_of_a_room_share_one() -> None:
    az = AppService(failures=0)
    states = RoomStates(az)  # type: ignore[arg-type]
    await asyncio.gather(states.load(ROOM), states.load(ROOM), states.load(ROOM))
    assert az.intent.calls == 1
