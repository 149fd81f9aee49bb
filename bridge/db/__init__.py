"""The bridge's persistent state: one module per table, queries beside their rows."""

from __future__ import annotations

from mautrix.util.async_db import Database

from .call import Call, CallParticipant
from .delegated_leave import DelegatedLeave
from .dialin import DialInChat, DialInGhost
from .guest import Guest, GuestLink
from .moderation import CallRemoval, ModerationAction, RoomMode, RoomModeName
from .processed_event import ProcessedEvent
from .room import Room
from .secret import Secret
from .upgrade import build_upgrade_table

__all__ = [
    "Call",
    "CallParticipant",
    "CallRemoval",
    "DelegatedLeave",
    "DialInChat",
    "DialInGhost",
    "Guest",
    "GuestLink",
    "ModerationAction",
    "ProcessedEvent",
    "Room",
    "RoomMode",
    "RoomModeName",
    "Secret",
    "build_upgrade_table",
    "init",
]


def init(db: Database) -> None:
    for table in (
        Call,
        CallParticipant,
        CallRemoval,
        DelegatedLeave,
        DialInChat,
        DialInGhost,
        Guest,
        GuestLink,
        ModerationAction,
        ProcessedEvent,
        Room,
        RoomMode,
        Secret,
    ):
        table.db = db
