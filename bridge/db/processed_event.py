"""Events whose side effects are done: makes redelivered transactions harmless."""

from __future__ import annotations

from typing import ClassVar
import time

from mautrix.types import EventID
from mautrix.util.async_db import Database


class ProcessedEvent:
    db: ClassVar[Database]

    @classmethod
    async def claim(cls, event_id: EventID) -> bool:
        """Record the event; False if it was recorded before (a redelivery)."""
        q = (
            "INSERT INTO processed_event (event_id, processed_at) VALUES ($1, $2) "
            "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
        )
        return await cls.db.fetchval(q, event_id, int(time.time() * 1000)) is not None

    @classmethod
    async def delete_before(cls, timestamp: int) -> None:
        await cls.db.execute("DELETE FROM processed_event WHERE processed_at < $1", timestamp)
