"""Call history rows on SQLite and PostgreSQL: a call's life, a crash's leftovers, retention."""

from __future__ import annotations

from mautrix.types import RoomID
from mautrix.util.async_db import Database
import pytest

from bridge.calls import describe_duration
from bridge.db import Call, CallParticipant, Room

ROOM = RoomID("!calls:example.org")
DAY_MS = 24 * 3600 * 1000


@pytest.fixture
async def db(bridge_db: Database) -> Database:
    await Room.get_or_create(ROOM)
    return bridge_db


async def test_a_call_from_start_to_end(db: Database) -> None:
    call = await Call.start(ROOM, 1_000)
    alice = CallParticipant(call.call_id, "@alice:example.org", "A", "matrixrtc", 1_000)
    bob = CallParticipant(call.call_id, "@bob:example.org", "B", "legacy_voip", 2_000)
    for row in (alice, bob):
        await row.insert()
    await call.count_participants(2)
    await call.count_participants(1)  # only maxima are kept
    await alice.leave(3_000)
    assert (await Call.get_active(ROOM)) == Call(call.call_id, ROOM, 1_000, None, 2)

    await bob.leave(4_000)
    await call.end(4_000)
    assert await Call.get_active(ROOM) is None
    assert await Call.get_last_ended(ROOM) == Call(call.call_id, ROOM, 1_000, 4_000, 2)
    assert [(p.user_id, p.via, p.left_at) for p in await CallParticipant.all_of(call.call_id)] == [
        ("@alice:example.org", "matrixrtc", 3_000),
        ("@bob:example.org", "legacy_voip", 4_000),
    ]


async def test_calls_left_open_by_a_crash_are_closed(db: Database) -> None:
    call = await Call.start(ROOM, 1_000)
    await CallParticipant(call.call_id, "@alice:example.org", "A", "matrixrtc", 1_000).insert()
    assert await Call.end_unfinished(9_000) == 1
    assert (await Call.get_last_ended(ROOM)).ended_at == 9_000  # type: ignore[union-attr]
    [alice] = await CallParticipant.all_of(call.call_id)
    assert alice.left_at == 9_000
    assert await Call.end_unfinished(10_000) == 0


async def test_retention_deletes_old_calls_with_their_participants(db: Database) -> None:
    old, recent = await Call.start(ROOM, 0), await Call.start(ROOM, 40 * DAY_MS)
    for call in (old, recent):
        await CallParticipant(call.call_id, "@alice:example.org", "A", "matrixrtc", 0).insert()
        await call.end(call.started_at + 1)
    await Call.delete_ended_before(30 * DAY_MS)
    assert await Call.get_last_ended(ROOM) == recent
    assert await CallParticipant.all_of(old.call_id) == []
    assert len(await CallParticipant.all_of(recent.call_id)) == 1


@pytest.mark.parametrize(
    ("milliseconds", "said"),
    [
        (20_400, "20 s"),
        (59_499, "59 s"),
        (61_000, "1 min"),
        (3_540_000, "59 min"),
        (3_600_000, "1 h"),
        (3_900_000, "1 h 5 min"),
    ],
)
def test_call_durations_read_as_people_say_them(milliseconds: int, said: str) -> None:
    assert describe_duration(milliseconds) == said
