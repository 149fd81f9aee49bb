"""Call history: one row per call in a room, from its first participant to its last."""

from __future__ import annotations

from typing import ClassVar
from dataclasses import dataclass
import uuid

from asyncpg import Record
from mautrix.types import RoomID
from mautrix.util.async_db import Database


@dataclass
class Call:
    db: ClassVar[Database]

    call_id: str
    room_id: RoomID
    started_at: int
    ended_at: int | None
    max_participants: int

    columns: ClassVar[str] = "call_id, room_id, started_at, ended_at, max_participants"

    @classmethod
    def _from_row(cls, row: Record | None) -> Call | None:
        return cls(**row) if row else None

    @classmethod
    async def _latest(cls, room_id: RoomID, *, ended: bool) -> Call | None:
        state = "IS NOT NULL" if ended else "IS NULL"
        q = (
            f"SELECT {cls.columns} FROM call WHERE room_id=$1 AND ended_at {state} "
            "ORDER BY started_at DESC LIMIT 1"
        )
        return cls._from_row(await cls.db.fetchrow(q, room_id))

    @classmethod
    async def get_active(cls, room_id: RoomID) -> Call | None:
        return await cls._latest(room_id, ended=False)

    @classmethod
    async def get_last_ended(cls, room_id: RoomID) -> Call | None:
        return await cls._latest(room_id, ended=True)

    @classmethod
    async def start(cls, room_id: RoomID, started_at: int) -> Call:
        call = cls(uuid.uuid4().hex, room_id, started_at, None, 0)
        q = f"INSERT INTO call ({cls.columns}) VALUES ($1, $2, $3, $4, $5)"
        await cls.db.execute(q, call.call_id, room_id, started_at, None, 0)
        return call

    async def count_participants(self, count: int) -> None:
        """Record the participant count if it is a new maximum."""
        if count > self.max_participants:
            self.max_participants = count
            q = "UPDATE call SET max_participants=$2 WHERE call_id=$1"
            await self.db.execute(q, self.call_id, count)

    async def end(self, ended_at: int) -> None:
        self.ended_at = ended_at
        await self.db.execute(
            "UPDATE call SET ended_at=$2 WHERE call_id=$1", self.call_id, ended_at
        )

    @classmethod
    async def end_unfinished(cls, ended_at: int) -> int:
        """Close calls a previous run of the bridge left open (it stopped or crashed): their
        media is gone. Returns how many there were."""
        await CallParticipant.db.execute(
            "UPDATE call_participant SET left_at=$1 WHERE left_at IS NULL", ended_at
        )
        rows = await cls.db.fetch("SELECT call_id FROM call WHERE ended_at IS NULL")
        await cls.db.execute("UPDATE call SET ended_at=$1 WHERE ended_at IS NULL", ended_at)
        return len(rows)

    @classmethod
    async def delete_ended_before(cls, timestamp: int) -> None:
        """Enforce the history retention; participants go with their call (cascade)."""
        await cls.db.execute(
            "DELETE FROM call WHERE ended_at IS NOT NULL AND ended_at < $1", timestamp
        )


@dataclass
class CallParticipant:
    """One stay of one device in a call (a device that rejoins gets another row)."""

    db: ClassVar[Database]

    call_id: str
    user_id: str
    device_id: str
    via: str
    joined_at: int
    left_at: int | None = None

    columns: ClassVar[str] = "call_id, user_id, device_id, via, joined_at, left_at"

    async def insert(self) -> None:
        q = f"INSERT INTO call_participant ({self.columns}) VALUES ($1, $2, $3, $4, $5, $6)"
        await self.db.execute(
            q, self.call_id, self.user_id, self.device_id, self.via, self.joined_at, self.left_at
        )

    async def leave(self, left_at: int) -> None:
        self.left_at = left_at
        q = (
            "UPDATE call_participant SET left_at=$5 "
            "WHERE call_id=$1 AND user_id=$2 AND device_id=$3 AND joined_at=$4"
        )
        await self.db.execute(
            q, self.call_id, self.user_id, self.device_id, self.joined_at, left_at
        )

    @classmethod
    async def was_in(cls, call_id: str, user_id: str) -> bool:
        """Whether ``user_id`` took part in the call at any time (with any device)."""
        q = "SELECT 1 FROM call_participant WHERE call_id=$1 AND user_id=$2 LIMIT 1"
        return await cls.db.fetchval(q, call_id, user_id) is not None

    @classmethod
    async def all_of(cls, call_id: str) -> list[CallParticipant]:
        q = f"SELECT {cls.columns} FROM call_participant WHERE call_id=$1 ORDER BY joined_at"
        return [cls(**row) for row in await cls.db.fetch(q, call_id)]
