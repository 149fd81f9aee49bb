"""Guest links of rooms and the guests who came through them."""

from __future__ import annotations

from typing import ClassVar
from dataclasses import dataclass

from asyncpg import Record
from mautrix.types import RoomID, UserID
from mautrix.util.async_db import Database


@dataclass
class GuestLink:
    """A link to a room's call; the secret in its URL is stored only as a hash."""

    db: ClassVar[Database]

    link_id: str
    room_id: RoomID
    secret_hash: str
    created_by: str
    created_at: int
    expires_at: int
    revoked_at: int | None = None
    uses: int = 0

    columns: ClassVar[str] = (
        "link_id, room_id, secret_hash, created_by, created_at, expires_at, revoked_at, uses"
    )

    @classmethod
    def _from_row(cls, row: Record | None) -> GuestLink | None:
        return cls(**row) if row else None

    async def insert(self) -> None:
        q = (
            "INSERT INTO guest_link (link_id, room_id, secret_hash, created_by, created_at, "
            "expires_at) VALUES ($1, $2, $3, $4, $5, $6)"
        )
        await self.db.execute(
            q,
            self.link_id,
            self.room_id,
            self.secret_hash,
            self.created_by,
            self.created_at,
            self.expires_at,
        )

    @classmethod
    async def by_secret_hash(cls, secret_hash: str) -> GuestLink | None:
        q = f"SELECT {cls.columns} FROM guest_link WHERE secret_hash=$1"
        return cls._from_row(await cls.db.fetchrow(q, secret_hash))

    @classmethod
    async def live_in(cls, room_id: RoomID, now: int) -> list[GuestLink]:
        """The room's links neither expired nor revoked, the newest first."""
        q = (
            f"SELECT {cls.columns} FROM guest_link WHERE room_id=$1 AND expires_at>$2 "
            "AND revoked_at IS NULL ORDER BY created_at DESC"
        )
        return [cls(**row) for row in await cls.db.fetch(q, room_id, now)]

    @classmethod
    async def revoke(cls, room_id: RoomID, link_id: str, now: int) -> bool:
        """False: the room has no such live link."""
        q = (
            "UPDATE guest_link SET revoked_at=$3 WHERE room_id=$1 AND link_id=$2 "
            "AND revoked_at IS NULL AND expires_at>$3 RETURNING link_id"
        )
        return await cls.db.fetchval(q, room_id, link_id, now) is not None

    async def count_use(self) -> None:
        self.uses += 1
        await self.db.execute("UPDATE guest_link SET uses=uses+1 WHERE link_id=$1", self.link_id)

    @classmethod
    async def delete_expired(cls, now: int) -> None:
        """Expired links go (revoked ones too, once they would have expired)."""
        await cls.db.execute("DELETE FROM guest_link WHERE expires_at <= $1", now)


@dataclass
class Guest:
    """A ghost user standing for a guest, in the room of the link it came through."""

    db: ClassVar[Database]

    user_id: UserID
    room_id: RoomID
    link_id: str
    created_at: int
    device_id: str | None = None

    columns: ClassVar[str] = "user_id, room_id, link_id, created_at, device_id"

    async def insert(self) -> None:
        q = (
            "INSERT INTO guest (user_id, room_id, link_id, created_at, device_id) "
            "VALUES ($1, $2, $3, $4, $5)"
        )
        await self.db.execute(
            q, self.user_id, self.room_id, self.link_id, self.created_at, self.device_id
        )

    @classmethod
    async def get(cls, user_id: str) -> Guest | None:
        row = await cls.db.fetchrow(f"SELECT {cls.columns} FROM guest WHERE user_id=$1", user_id)
        return cls(**row) if row else None

    @classmethod
    async def created_before(cls, timestamp: int) -> list[Guest]:
        q = f"SELECT {cls.columns} FROM guest WHERE created_at < $1"
        return [cls(**row) for row in await cls.db.fetch(q, timestamp)]

    async def set_device(self, device_id: str) -> None:
        self.device_id = device_id
        await self.db.execute(
            "UPDATE guest SET device_id=$2 WHERE user_id=$1", self.user_id, device_id
        )

    async def delete(self) -> None:
        await self.db.execute("DELETE FROM guest WHERE user_id=$1", self.user_id)
