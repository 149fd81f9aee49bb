"""The media side of the LiveKit signalling: runs each admitted connection as a
:class:`SignalSession` next to the SFU conference it joins (in this process, or in the media
worker that owns the conference).

A connection that drops without the client leaving does not end its session at once: for
``resume_grace_s`` the participant stays, and a client that reconnects with its participant
sid (livekit-client's resume) continues the session on the new connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from dataclasses import dataclass
import asyncio
import logging

from aiohttp import WSCloseCode, web
from livekit.protocol import models, rtc
from mautrix.types import RoomID, UserID

from ..conferences import Conferences, Profile, Via
from ..focus.tokens import FocusGrant, FocusTokens
from .ids import new_sid
from .protocol import ConnectRequest, encode_response
from .room import LiveKitRoom, RoomParticipant
from .session import DualPCSession, SignalSession, SinglePCSession

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from sfu import MediaSettings

log = logging.getLogger("mau.livekit")


@dataclass(frozen=True)
class Admission:
    """A connection the control side let in, and what it may do."""

    grant: FocusGrant
    conference_id: str
    can_publish: bool
    auto_subscribe: bool
    join_request: rtc.JoinRequest | None
    """v1 only: what the client sent to join, with its first offer."""
    resume_sid: str | None
    """The participant a reconnecting client continues; None for a join."""

    @classmethod
    def of(
        cls, connect: ConnectRequest, grant: FocusGrant, conference_id: str, can_publish: bool
    ) -> Admission:
        return cls(
            grant,
            conference_id,
            can_publish=grant.video.can_publish and can_publish,
            auto_subscribe=connect.auto_subscribe,
            join_request=connect.join_request,
            resume_sid=connect.resume_sid,
        )


class LiveKitHost:
    def __init__(
        self,
        conferences: Conferences,
        media: MediaSettings,
        may_publish: Callable[[RoomID, UserID, Profile], Awaitable[bool]],
        empty_grace_s: float,
        resume_grace_s: float,
    ) -> None:
        self.conferences = conferences
        self.media = media
        self.may_publish = may_publish
        """Decides now, from the room's state, whether a participant may publish, and tells
        the SFU (:meth:`PublishRights.apply`)."""
        self.empty_grace_s = empty_grace_s
        """How long an empty conference stays open, so a participant reconnecting finds it."""
        self.resume_grace_s = resume_grace_s
        """How long a participant whose connection dropped stays, for the client to resume."""
        self.tokens: FocusTokens | None = None
        """Set once the focus has its keys: sessions refresh their clients' tokens."""
        self.rooms: dict[str, LiveKitRoom] = {}
        """By conference id: only conferences with LiveKit clients have one."""
        self._closing: set[asyncio.Task[None]] = set()

    async def stop(self) -> None:
        """End every session (clients are told the server shuts down)."""
        for task in self._closing:
            task.cancel()
        for room in list(self.rooms.values()):
            conference = self.conferences.sfu.conference(room.conference_id)
            for sid in list(room.sessions):
                if conference is not None:
                    await conference.remove(sid, "server shutdown")

    async def run(self, ws: web.WebSocketResponse, admission: Admission) -> None:
        """Serve one prepared client connection until it ends."""
        assert self.tokens is not None, "tokens are set before the focus listens"
        grant = admission.grant
        if admission.resume_sid is not None:
            room = self.rooms.get(admission.conference_id)
            await self._resume(ws, room, admission.resume_sid, grant.identity)
            return
        room = self._room(admission.conference_id, grant.room_alias)
        await self._replace_duplicate(room, grant.identity)
        sid = new_sid("PA_")
        profile = Profile(
            grant.user_id,
            grant.device_id,
            Via.MATRIXRTC,
            identity=grant.identity,
            may_publish=grant.video.can_publish,
        )
        participant = self.conferences.join(
            admission.conference_id, sid, profile, auto_subscribe=admission.auto_subscribe
        )
        participant.set_can_publish(admission.can_publish)
        me = RoomParticipant(
            sid=sid,
            identity=grant.identity,
            name=grant.user_id,
            permission=models.ParticipantPermission(
                can_publish=admission.can_publish,
                can_subscribe=grant.video.can_subscribe,
                can_publish_data=admission.can_publish,
                can_update_metadata=True,
            ),
        )

        async def may_publish() -> bool:
            allowed = await self.may_publish(RoomID(grant.room_id), UserID(grant.user_id), profile)
            participant.set_can_publish(allowed)
            return allowed

        context = (ws, room, me, participant, grant, self.tokens, self.media, may_publish)
        session: SignalSession = (
            DualPCSession(*context)
            if admission.join_request is None
            else SinglePCSession(*context, join_request=admission.join_request)
        )
        room.add(me, session)
        room.participant_changed(me)
        log.info(
            "%s joined conference %s (signalling %s)",
            grant.user_id,
            admission.conference_id,
            "v0" if admission.join_request is None else "v1",
        )
        try:
            await session.run()
        finally:
            await self._after_connection(session, ws, room.conference_id)

    async def _resume(
        self, ws: web.WebSocketResponse, room: LiveKitRoom | None, sid: str, identity: str
    ) -> None:
        """Continue the session a reconnecting client names, if it is still there and its
        own; otherwise tell the client to join afresh (livekit-client then does a full
        reconnect), as LiveKit does."""
        session = room.sessions.get(sid) if room else None
        participant = room.participants.get(sid) if room else None
        if (
            room is None
            or not isinstance(session, SignalSession)
            or session.ended
            or participant is None
            or participant.identity != identity
        ):
            leave = rtc.LeaveRequest(
                can_reconnect=True,
                reason=models.DisconnectReason.STATE_MISMATCH,
                action=rtc.LeaveRequest.Action.RECONNECT,
            )
            await ws.send_bytes(encode_response(rtc.SignalResponse(leave=leave)))
            await ws.close(code=WSCloseCode.OK, message=b"nothing to resume: join again")
            return
        try:
            await session.resume(ws)
        finally:
            await self._after_connection(session, ws, room.conference_id)

    async def _after_connection(
        self, session: SignalSession, ws: web.WebSocketResponse, conference_id: str
    ) -> None:
        """A connection ended: the session ends with it, unless the connection merely
        dropped and the client resumes within the grace time (or already has)."""
        if not session.ended and await session.resumed_within(ws, self.resume_grace_s):
            return
        conference = self.conferences.sfu.conference(conference_id)
        if conference is not None:
            await conference.remove(session.me.sid, session.end_reason)

    def _room(self, conference_id: str, name: str) -> LiveKitRoom:
        room = self.rooms.get(conference_id)
        if room is None:
            self.conferences.get_or_create(conference_id)
            room = LiveKitRoom(name, conference_id, self.conferences, self._room_empty)
            self.rooms[conference_id] = room
        return room

    async def _replace_duplicate(self, room: LiveKitRoom, identity: str) -> None:
        """One identity, one connection (as LiveKit does): a reconnecting client replaces its
        stale self instead of appearing twice."""
        for participant in list(room.participants.values()):
            if participant.identity == identity and participant.sid in room.sessions:
                conference = self.conferences.sfu.conference(room.conference_id)
                if conference is not None:
                    await conference.remove(participant.sid, "duplicate identity")

    def _room_empty(self, room: LiveKitRoom) -> None:
        if self.rooms.get(room.conference_id) is room:
            del self.rooms[room.conference_id]
        room.close()
        task = asyncio.get_running_loop().create_task(self._close_later(room.conference_id))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_later(self, conference_id: str) -> None:
        await asyncio.sleep(self.empty_grace_s)
        if conference_id not in self.rooms:
            await self.conferences.close_if_empty(conference_id)
