"""Dial-in ghosts of rooms, and the direct chats in which people call them."""

from __future__ import annotations

from typing import ClassVar
from dataclasses import dataclass
import time

from asyncpg import Record
from mautrix.types import RoomID, UserID
from mautrix.util.async_db import Database


@dataclass
class DialInGhost:
    """The ghost user that stands for a room's conference in 1:1 calls."""

    db: ClassVar[Database]

    room_id: RoomID
    user_id: UserID
    created_at: int

    columns: ClassVar[str] = "room_id, user_id, created_at"

    @classmethod
    def _from_row(cls, row: Record | None) -> DialInGhost | None:
        return cls(**row) if row else None

    @classmethod
    async def get_by_room(cls, room_id: RoomID) -> DialInGhost | None:
        q = f"SELECT {cls.columns} FROM dialin_ghost WHERE room_id=$1"
        return cls._from_row(await cls.db.fetchrow(q, room_id))

    @classmethod
    async def get_by_user(cls, user_id: UserID) -> DialInGhost | None:
        q = f"SELECT {cls.columns} FROM dialin_ghost WHERE user_id=$1"
        return cls._from_row(await cls.db.fetchrow(q, user_id))

    @classmethod
    async def get_or_create(cls, room_id: RoomID, user_id: UserID) -> DialInGhost:
        """The room's ghost; ``user_id`` is used only if the room has none yet."""
        q = (
            "INSERT INTO dialin_ghost (room_id, user_id, created_at) VALUES ($1, $2, $3) "
            "ON CONFLICT (room_id) DO NOTHING"
        )
        await cls.db.execute(q, room_id, user_id, int(time.time() * 1000))
        ghost = await cls.get_by_room(room_id)
        assert ghost is not None
        return ghost


@dataclass
class DialInChat:
    """A direct chat with a dial-in ghost; calls placed in it join the ghost's room."""

    db: ClassVar[Database]

    chat_room_id: RoomID
    ghost_user_id: UserID
    opened_by: UserID
    created_at: int

    columns: ClassVar[str] = "chat_room_id, ghost_user_id, opened_by, created_at"

    @classmethod
    def _from_row(cls, row: Record | None) -> DialInChat | None:
        return cls(**row) if row else None

    @classmethod
    async def get(cls, chat_room_id: RoomID) -> DialInChat | None:
        q = f"SELECT {cls.columns} FROM dialin_chat WHERE chat_room_id=$1"
        return cls._from_row(await cls.db.fetchrow(q, chat_room_id))

    @classmethod
    async def insert(cls, chat_room_id: RoomID, ghost_user_id: UserID, opened_by: UserID) -> bool:
        """Record the chat; False if it is already one (possibly with another ghost)."""
        q = (
            "INSERT INTO dialin_chat (chat_room_id, ghost_user_id, opened_by, created_at) "
            "VALUES ($1, $2, $3, $4) ON CONFLICT (chat_room_id) DO NOTHING "
            "RETURNING chat_room_id"
        )
        now = int(time.time() * 1000)
        return await cls.db.fetchval(q, chat_room_id, ghost_user_id, opened_by, now) is not None

    @classmethod
    async def delete(cls, chat_room_id: RoomID) -> None:
        await cls.db.execute("DELETE FROM dialin_chat WHERE chat_room_id=$1", chat_room_id)
