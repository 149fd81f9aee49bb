"""Secrets the bridge generates and keeps for itself (never logged, never in the config)."""

from __future__ import annotations

from typing import ClassVar
from dataclasses import dataclass, field
import secrets
import time

from mautrix.util.async_db import Database

SECRET_BYTES = 32


@dataclass
class Secret:
    db: ClassVar[Database]

    name: str
    value: str = field(repr=False)
    created_at: int

    columns: ClassVar[str] = "name, value, created_at"

    @classmethod
    async def get_or_create(cls, name: str) -> Secret:
        """The named secret, generated on first use; nodes starting at once agree on one."""
        insert = (
            "INSERT INTO secret (name, value, created_at) VALUES ($1, $2, $3) "
            "ON CONFLICT (name) DO NOTHING"
        )
        value = secrets.token_urlsafe(SECRET_BYTES)
        await cls.db.execute(insert, name, value, int(time.time() * 1000))
        row = await cls.db.fetchrow(f"SELECT {cls.columns} FROM secret WHERE name=$1", name)
        assert row is not None
        return cls(**row)
