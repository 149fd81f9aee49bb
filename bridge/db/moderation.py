"""What moderators set and did: call modes of rooms, removals with expiry, the action log."""

from __future__ import annotations

from typing import ClassVar
from dataclasses import dataclass
from enum import StrEnum

from mautrix.types import RoomID
from mautrix.util.async_db import Database


class RoomModeName(StrEnum):
    LOCKED = "locked"
    MODERATED = "moderated"


class RoomMode:
    """A mode is on while its row exists."""

    db: ClassVar[Database]

    @classmethod
    async def is_on(cls, room_id: RoomID, mode: RoomModeName) -> bool:
        q = "SELECT 1 FROM room_mode WHERE room_id=$1 AND mode=$2"
        return await cls.db.fetchval(q, room_id, mode.value) is not None

    @classmethod
    async def set(cls, room_id: RoomID, mode: RoomModeName, on: bool, by: str, now: int) -> bool:
        """Switch the mode; False if it already was so."""
        if on:
            q = (
                "INSERT INTO room_mode (room_id, mode, set_by, set_at) VALUES ($1, $2, $3, $4) "
                "ON CONFLICT (room_id, mode) DO NOTHING RETURNING room_id"
            )
            return await cls.db.fetchval(q, room_id, mode.value, by, now) is not None
        q = "DELETE FROM room_mode WHERE room_id=$1 AND mode=$2 RETURNING room_id"
        return await cls.db.fetchval(q, room_id, mode.value) is not None


@dataclass
class CallRemoval:
    db: ClassVar[Database]

    room_id: RoomID
    user_id: str
    expires_at: int
    removed_by: str
    reason: str

    columns: ClassVar[str] = "room_id, user_id, expires_at, removed_by, reason"

    @classmethod
    async def active(cls, room_id: RoomID, user_id: str, now: int) -> CallRemoval | None:
        q = (
            f"SELECT {cls.columns} FROM call_removal "
            "WHERE room_id=$1 AND user_id=$2 AND expires_at>$3"
        )
        row = await cls.db.fetchrow(q, room_id, user_id, now)
        return cls(**row) if row else None

    async def save(self) -> None:
        """A later removal of the same user replaces the earlier one."""
        q = (
            f"INSERT INTO call_removal ({self.columns}) VALUES ($1, $2, $3, $4, $5) "
            "ON CONFLICT (room_id, user_id) DO UPDATE SET expires_at=excluded.expires_at, "
            "removed_by=excluded.removed_by, reason=excluded.reason"
        )
        await self.db.execute(
            q, self.room_id, self.user_id, self.expires_at, self.removed_by, self.reason
        )

    @classmethod
    async def delete_expired(cls, now: int) -> None:
        await cls.db.execute("DELETE FROM call_removal WHERE expires_at <= $1", now)


@dataclass
class ModerationAction:
    db: ClassVar[Database]

    room_id: RoomID
    call_id: str | None
    actor: str
    action: str
    target: str | None
    detail: str
    created_at: int

    columns: ClassVar[str] = "room_id, call_id, actor, action, target, detail, created_at"

    async def insert(self) -> None:
        q = f"INSERT INTO moderation_action ({self.columns}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        await self.db.execute(
            q,
            self.room_id,
            self.call_id,
            self.actor,
            self.action,
            self.target,
            self.detail,
            self.created_at,
        )

    @classmethod
    async def of_call(cls, call_id: str) -> list[ModerationAction]:
        q = f"SELECT {cls.columns} FROM moderation_action WHERE call_id=$1 ORDER BY created_at"
        return [cls(**row) for row in await cls.db.fetch(q, call_id)]

    @classmethod
    async def delete_before(cls, timestamp: int) -> None:
        """History retention for actions outside any call (those in a call go with it)."""
        await cls.db.execute(
            "DELETE FROM moderation_action WHERE call_id IS NULL AND created_at < $1", timestamp
        )
