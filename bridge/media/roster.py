"""Who is in which conference, as the media reports it: the control side's view.

The media (in this process or in a worker) reports every participant's state with its
profile; call history, moderation, delegated leave, guests and the signalling limits read
this roster instead of the SFU, so they work the same wherever a conference runs.
"""

from __future__ import annotations

from typing import Any, NamedTuple
from collections.abc import Callable
from dataclasses import asdict, dataclass
import logging

from mautrix.types import RoomID

from sfu import ParticipantState

from ..conferences import Profile, Via
from ..db import Room

log = logging.getLogger("mau.media.roster")


@dataclass(frozen=True)
class Presence:
    """A participant's state in a conference changed."""

    conference_id: str
    participant_id: str
    state: ParticipantState
    profile: Profile
    reason: str = ""

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Presence:
        profile = dict(data["profile"])
        profile["via"] = Via(profile["via"])
        return cls(
            data["conference_id"],
            data["participant_id"],
            ParticipantState(data["state"]),
            Profile(**profile),
            data.get("reason", ""),
        )


class Member(NamedTuple):
    conference_id: str
    participant_id: str
    profile: Profile


PresenceHandler = Callable[[Presence], None]


class Roster:
    def __init__(self) -> None:
        self._members: dict[str, dict[str, Profile]] = {}
        """By conference id, then participant id."""
        self._listeners: list[PresenceHandler] = []

    def listen(self, handler: PresenceHandler) -> None:
        """Receive every presence change, after the roster applied it."""
        self._listeners.append(handler)

    def apply(self, presence: Presence) -> None:
        members = self._members.setdefault(presence.conference_id, {})
        if presence.state is ParticipantState.DISCONNECTED:
            members.pop(presence.participant_id, None)
            if not members:
                del self._members[presence.conference_id]
        else:
            members[presence.participant_id] = presence.profile
        for handler in list(self._listeners):
            try:
                handler(presence)
            except Exception:
                log.exception("Handling the presence of %s failed", presence.participant_id)

    def drop(self, conference_id: str, reason: str) -> None:
        """The media of a conference is gone (its worker died): everyone in it left."""
        for participant_id, profile in list(self._members.get(conference_id, {}).items()):
            self.apply(
                Presence(
                    conference_id, participant_id, ParticipantState.DISCONNECTED, profile, reason
                )
            )

    def profile(self, conference_id: str, participant_id: str) -> Profile | None:
        return self._members.get(conference_id, {}).get(participant_id)

    def members(self, conference_id: str | None = None) -> list[Member]:
        """Everyone in one conference, or in all of them."""
        conferences = (
            self._members.items()
            if conference_id is None
            else [(conference_id, self._members.get(conference_id, {}))]
        )
        return [
            Member(cid, participant_id, profile)
            for cid, members in conferences
            for participant_id, profile in members.items()
        ]

    async def in_room(self, room_id: RoomID) -> list[Member]:
        """Who is in a room's call now, with how they came, whichever adapter they use."""
        room = await Room.get(room_id)
        return self.members(room.conference_id) if room else []
