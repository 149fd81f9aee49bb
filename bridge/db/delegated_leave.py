"""Delegated delayed leave jobs (the schedule is :mod:`bridge.focus.leave_schedule`), kept so
that a restart of the bridge neither forgets a participant's leave nor sends it twice."""

from __future__ import annotations

from typing import ClassVar
from dataclasses import dataclass, field

from mautrix.util.async_db import Database


@dataclass
class DelegatedLeave:
    """One job; times in milliseconds since the epoch."""

    db: ClassVar[Database]

    conference_id: str
    identity: str
    legacy_identity: str
    user_id: str
    delay_id: str = field(repr=False)
    """Authorises acting on the user's delayed event: never logged."""
    delay_ms: int | None
    phase: str
    due_ms: int
    expires_ms: int
    give_up_ms: int

    columns: ClassVar[str] = (
        "conference_id, identity, legacy_identity, user_id, delay_id, delay_ms, phase, "
        "due_ms, expires_ms, give_up_ms"
    )

    @classmethod
    async def all(cls) -> list[DelegatedLeave]:
        rows = await cls.db.fetch(f"SELECT {cls.columns} FROM delegated_leave")
        return [cls(**row) for row in rows]

    async def save(self) -> None:
        q = (
            f"INSERT INTO delegated_leave ({self.columns}) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
            "ON CONFLICT (conference_id, identity) DO UPDATE SET "
            "legacy_identity=excluded.legacy_identity, user_id=excluded.user_id, "
            "delay_id=excluded.delay_id, delay_ms=excluded.delay_ms, phase=excluded.phase, "
            "due_ms=excluded.due_ms, expires_ms=excluded.expires_ms, "
            "give_up_ms=excluded.give_up_ms"
        )
        await self.db.execute(
            q,
            self.conference_id,
            self.identity,
            self.legacy_identity,
            self.user_id,
            self.delay_id,
            self.delay_ms,
            self.phase,
            self.due_ms,
            self.expires_ms,
            self.give_up_ms,
        )

    async def delete(self) -> None:
        """Only this job: a newer delegation (another delay ID) for the identity stays."""
        q = "DELETE FROM delegated_leave WHERE conference_id=$1 AND identity=$2 AND delay_id=$3"
        await self.db.execute(q, self.conference_id, self.identity, self.delay_id)
