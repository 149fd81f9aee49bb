"""Call history: one row per call in a room, from its first participant to its last."""

from __future__ import annotations

from typing import ClassVar
from dataclasses import dataclass

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
    async def get_active(cls, room_id: RoomID) -> Call | None:
        q = (
            f"SELECT {cls.columns} FROM call WHERE room_id=$1 AND ended_at IS NULL "
            "ORDER BY started_at DESC LIMIT 1"
        )
        return cls._from_row(await cls.db.fetchrow(q, room_id))

    @classmethod
    async def get_last_ended(cls, room_id: RoomID) -> Call | None:
        q = (
            f"SELECT {cls.columns} FROM call WHERE room_id=$1 AND ended_at IS NOT NULL "
            "ORDER BY ended_at DESC LIMIT 1"
        )
        return cls._from_row(await cls.db.fetchrow(q, room_id))

    @classmethod
    async def delete_ended_before(cls, timestamp: int) -> None:
        """Enforce the history retention; participants go with their call (cascade)."""
        await cls.db.execute(
            "DELETE FROM call WHERE ended_at IS NOT NULL AND ended_at < $1", timestamp
        )
