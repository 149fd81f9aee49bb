"""Calls as rooms see them, whichever way participants arrive (LiveKit signalling, dial-in):
call history rows, a notice when a call starts and ends, and who is in a room's call now.

A call starts with its first participant and ends a grace period after its last one leaves,
so that a participant reconnecting (a network change, a reload) continues the same call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from dataclasses import dataclass, field
import asyncio
import contextlib
import logging
import time

from mautrix.errors import MatrixError
from mautrix.types import Membership, RoomID

from sfu import ParticipantState

from .conferences import Profile
from .db import Call, CallParticipant, Room
from .media import Presence

if TYPE_CHECKING:
    from .bridge import Bridge

log = logging.getLogger("mau.calls")


def _now_ms() -> int:
    return int(time.time() * 1000)


def describe_duration(milliseconds: int) -> str:
    """How long a call lasted, as people say it: "40 s", "12 min", "1 h 5 min"."""
    seconds = max(0, round(milliseconds / 1000))
    if seconds < 60:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


@dataclass
class LiveCall:
    room_id: RoomID
    call: Call
    participants: dict[str, CallParticipant] = field(default_factory=dict)
    profiles: dict[str, Profile] = field(default_factory=dict)
    ending: asyncio.Task[None] | None = None
    emptied_at: int | None = None
    """When its last participant left (ms): the call ended then, unless someone returns
    within the grace period."""


class CallTracker:
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self._live: dict[str, LiveCall] = {}
        """By conference id."""
        self._events: asyncio.Queue[Presence] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        bridge.media.roster.listen(self._on_presence)

    async def start(self) -> None:
        unfinished = await Call.end_unfinished(_now_ms())
        if unfinished:
            log.info("Closed %d calls left open by the previous run", unfinished)
        self._worker = asyncio.create_task(self._work())

    async def stop(self) -> None:
        """The media is gone with the bridge: every live call ends now (recorded only: the
        appservice has already stopped)."""
        if self._worker is not None:
            self._worker.cancel()
        for conference_id in list(self._live):
            await self._end(conference_id, announce=False)

    def participants(self, room_id: RoomID) -> list[Profile]:
        """Who is in the room's call now (empty: no call)."""
        for live in self._live.values():
            if live.room_id == room_id:
                return list(live.profiles.values())
        return []

    # ------------------------------------------------------------------ events

    def _on_presence(self, presence: Presence) -> None:
        if presence.state in (ParticipantState.JOINED, ParticipantState.DISCONNECTED):
            self._events.put_nowait(presence)

    async def _work(self) -> None:
        """One event at a time, in order: a join is recorded before the matching leave."""
        while True:
            event = await self._events.get()
            try:
                if event.state is ParticipantState.JOINED:
                    await self._joined(event.conference_id, event.participant_id, event.profile)
                else:
                    await self._left(event.conference_id, event.participant_id)
            except Exception:
                log.exception("Recording %s of %s failed", event.state, event.participant_id)

    async def _joined(self, conference_id: str, participant_id: str, profile: Profile) -> None:
        live = self._live.get(conference_id)
        if live is None:
            room = await Room.get_by_conference(conference_id)
            if room is None:
                return
            live = LiveCall(room.room_id, await Call.start(room.room_id, _now_ms()))
            self._live[conference_id] = live
            log.info("Call started in %s", room.room_id)
            await self._notice(live.room_id, "A call started in this room.")
        if live.ending is not None:
            live.ending.cancel()
            live.ending = None
        live.emptied_at = None
        row = CallParticipant(
            live.call.call_id, profile.user_id, profile.device_id, profile.via, _now_ms()
        )
        await row.insert()
        live.participants[participant_id] = row
        live.profiles[participant_id] = profile
        await live.call.count_participants(len(live.participants))

    async def _left(self, conference_id: str, participant_id: str) -> None:
        live = self._live.get(conference_id)
        row = live.participants.pop(participant_id, None) if live else None
        if live is None or row is None:
            return
        live.profiles.pop(participant_id, None)
        left_at = _now_ms()
        await row.leave(left_at)
        if not live.participants:
            live.emptied_at = left_at
            live.ending = asyncio.create_task(self._end_later(conference_id))

    async def _end_later(self, conference_id: str) -> None:
        await asyncio.sleep(self.bridge.config["bridge.call_end_grace"])
        await self._end(conference_id)

    async def _end(self, conference_id: str, announce: bool = True) -> None:
        live = self._live.pop(conference_id, None)
        if live is None:
            return
        ended_at = live.emptied_at or _now_ms()
        for row in live.participants.values():
            await row.leave(ended_at)
        await live.call.end(ended_at)
        duration = describe_duration(ended_at - live.call.started_at)
        log.info("Call ended in %s", live.room_id)
        if announce:
            await self._notice(
                live.room_id,
                f"The call ended after {duration}; {live.call.max_participants} "
                f"participant{'s' if live.call.max_participants != 1 else ''} at most.",
            )

    async def _notice(self, room_id: RoomID, text: str) -> None:
        """Only in rooms the bot is in: sending would otherwise make it join uninvited."""
        if not self.bridge.config["bridge.call_notices"]:
            return
        intent = self.bridge.az.intent
        if await self.bridge.state_store.get_membership(room_id, intent.mxid) != Membership.JOIN:
            return
        with contextlib.suppress(MatrixError):
            await intent.send_notice(room_id, text)
