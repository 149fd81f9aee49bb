"""A Matrix room the bridge serves, and the SFU conference its calls run in."""

from __future__ import annotations

from typing import ClassVar
from dataclasses import dataclass
import time
import uuid

from asyncpg import Record
from mautrix.types import RoomID
from mautrix.util.async_db import Database


@dataclass
class Room:
    db: ClassVar[Database]

    room_id: RoomID
    conference_id: str
    created_at: int

    columns: ClassVar[str] = "room_id, conference_id, created_at"

    @classmethod
    def _from_row(cls, row: Record | None) -> Room | None:
        return cls(**row) if row else None

    @classmethod
    async def get(cls, room_id: RoomID) -> Room | None:
        q = f"SELECT {cls.columns} FROM room WHERE room_id=$1"
        return cls._from_row(await cls.db.fetchrow(q, room_id))

    @classmethod
    async def get_by_conference(cls, conference_id: str) -> Room | None:
        q = f"SELECT {cls.columns} FROM room WHERE conference_id=$1"
        return cls._from_row(await cls.db.fetchrow(q, conference_id))

    @classmethod
    async def get_or_create(cls, room_id: RoomID) -> Room:
        """The room's mapping, made on first use; stable across restarts."""
        q = (
            "INSERT INTO room (room_id, conference_id, created_at) VALUES ($1, $2, $3) "
            "ON CONFLICT (room_id) DO NOTHING"
        )
        await cls.db.execute(q, room_id, uuid.uuid4().hex, int(time.time() * 1000))
        room = await cls.get(room_id)
        assert room is not None
        return room
