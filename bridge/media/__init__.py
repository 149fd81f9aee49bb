"""The seam between the control side (Matrix, tokens, database) and the media (SFU,
signalling sessions, dial-in legs), which runs in this process or in worker processes."""

from __future__ import annotations

from .plane import LegAnswer, MediaFigures, MediaPlane, PublishCheck
from .roster import Member, Presence, Roster

__all__ = [
    "LegAnswer",
    "MediaFigures",
    "MediaPlane",
    "Member",
    "Presence",
    "PublishCheck",
    "Roster",
]
