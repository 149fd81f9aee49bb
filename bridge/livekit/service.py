"""The signalling endpoints on the focus listener, checked against the focus's tokens and the
room's Matrix state, each connection a :class:`SignalSession`: protocol v1 at ``/rtc/v1`` (one
peer connection; livekit-client's default and Element Call's) and v0 at ``/rtc`` (two; older
clients, the Flutter SDK, and livekit-client's fallback when v1 fails), each with its
``/validate`` twin, which livekit-client asks to explain a failed connection.

A connection that drops without the client leaving does not end its session at once: for
``resume_grace_s`` the participant stays, and a client that reconnects with its participant
sid (livekit-client's resume) continues the session on the new connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from dataclasses import dataclass
from functools import partial
import asyncio
import logging

from aiohttp import WSCloseCode, web
from livekit.protocol import models, rtc
from mautrix.types import RoomID, UserID

from ..conferences import Conferences, Profile, Via
from ..db import Room
from ..focus.errors import Forbidden
from ..focus.tokens import FocusGrant, InvalidFocusToken
from .ids import new_sid
from .protocol import MAX_MESSAGE_BYTES, ProtocolViolation, connect_request, encode_response
from .room import LiveKitRoom, RoomParticipant
from .session import DualPCSession, SignalSession, SinglePCSession

if TYPE_CHECKING:
    from sfu import MediaSettings

    from ..focus import Focus
    from ..publishing import PublishRights

log = logging.getLogger("mau.livekit")


@dataclass(frozen=True)
class SessionLimits:
    """Bounds on signalling sessions, so no user or room can take the whole server."""

    per_user: int = 5
    """Connections one Matrix user may hold at once, all rooms together."""
    per_room: int = 100
    """Participants one room's call may hold, however they joined."""


@dataclass(frozen=True)
class Admission:
    grant: FocusGrant
    conference_id: str
    can_publish: bool
    auto_subscribe: bool
    join_request: rtc.JoinRequest | None
    """v1 only: what the client sent to join, with its first offer."""
    resume_sid: str | None
    """The participant a reconnecting client continues; None for a join."""


class LiveKitSignalling:
    def __init__(
        self,
        focus: Focus,
        conferences: Conferences,
        rights: PublishRights,
        media: MediaSettings,
        limits: SessionLimits,
        empty_grace_s: float,
        resume_grace_s: float,
    ) -> None:
        self.focus = focus
        self.rights = rights
        self.limits = limits
        self.empty_grace_s = empty_grace_s
        """How long an empty conference stays open, so a participant reconnecting finds it."""
        self.resume_grace_s = resume_grace_s
        """How long a participant whose connection dropped stays, for the client to resume."""
        self.conferences = conferences
        self.media = media
        self.rooms: dict[str, LiveKitRoom] = {}
        """By conference id: only conferences with LiveKit clients have one."""
        self._closing: set[asyncio.Task[None]] = set()

    def add_routes(self, app: web.Application) -> None:
        for path, single_pc in (("/rtc", False), ("/rtc/v1", True)):
            app.router.add_get(path, partial(self._connect, single_pc=single_pc))
            app.router.add_get(f"{path}/validate", partial(self._validate, single_pc=single_pc))

    async def stop(self) -> None:
        """End every session (clients are told the server shuts down) before the listener
        stops, which would otherwise wait for their WebSockets."""
        for task in self._closing:
            task.cancel()
        for room in list(self.rooms.values()):
            conference = self.conferences.sfu.conference(room.conference_id)
            for sid in list(room.sessions):
                if conference is not None:
                    await conference.remove(sid, "server shutdown")

    async def disconnect_user(
        self, room_id: RoomID, user_id: UserID, reason: str, device_id: str | None = None
    ) -> None:
        """Remove a user's LiveKit connections (or one device's) from a room's call: banned,
        kicked, left the room or the call. Their dial-in calls are not ours: dial-in hangs them
        up, telling the caller why."""
        for conference, participant, profile in await self.conferences.in_room(room_id):
            if (
                profile.via is Via.MATRIXRTC
                and profile.user_id == user_id
                and device_id in (None, profile.device_id)
            ):
                log.info("Removing %s from the call in %s: %s", user_id, room_id, reason)
                await conference.remove(participant.id, reason)

    # ------------------------------------------------------------------ HTTP

    async def _admit(self, request: web.Request, single_pc: bool) -> Admission:
        """Check the token and, again, the room: the token may be an hour old.

        Raises:
            web.HTTPException: 400, 401 or 403 with a reason the client shows.
        """
        try:
            connect = connect_request(request, single_pc=single_pc)
            grant = self.focus.verify(connect.token)
        except ProtocolViolation as e:
            raise web.HTTPBadRequest(text=str(e)) from e
        except InvalidFocusToken as e:
            raise web.HTTPUnauthorized(text=str(e)) from e
        try:
            access = await self.focus.access.check(RoomID(grant.room_id), UserID(grant.user_id))
        except Forbidden as e:
            raise web.HTTPForbidden(text=str(e)) from e
        room = await Room.get_or_create(RoomID(grant.room_id))
        self._check_limits(room.conference_id, grant)
        return Admission(
            grant,
            room.conference_id,
            can_publish=grant.video.can_publish and access.can_publish,
            auto_subscribe=connect.auto_subscribe,
            join_request=connect.join_request,
            resume_sid=connect.resume_sid,
        )

    def _check_limits(self, conference_id: str, grant: FocusGrant) -> None:
        """Refuse a connection beyond the limits; a client reconnecting with the identity it
        already has is not counted twice (it replaces its stale session).

        Raises:
            web.HTTPException: 429 for a user over the limit, 503 for a full call or server.
        """
        sfu = self.conferences.sfu
        if not sfu.accepts_newcomers():
            raise web.HTTPServiceUnavailable(
                text="The media server is busy connecting others; try again in a moment."
            )
        per_user = in_room = 0
        for conference in sfu.conferences:
            for participant in conference.participants:
                profile = self.conferences.profile(conference.id, participant.id)
                if profile is not None and profile.identity == grant.identity:
                    continue
                in_room += conference.id == conference_id
                if profile is not None and profile.user_id == grant.user_id:
                    per_user += 1
        if per_user >= self.limits.per_user:
            raise web.HTTPTooManyRequests(
                text=f"You are in calls with {per_user} connections already; leave one first."
            )
        if in_room >= self.limits.per_room:
            raise web.HTTPServiceUnavailable(text="This call is full.")

    async def _validate(self, request: web.Request, single_pc: bool) -> web.Response:
        await self._admit(request, single_pc)
        return web.Response(text="success")

    async def _connect(self, request: web.Request, single_pc: bool) -> web.WebSocketResponse:
        admission = await self._admit(request, single_pc)
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES)
        await ws.prepare(request)
        grant = admission.grant
        if admission.resume_sid is not None:
            room = self.rooms.get(admission.conference_id)
            await self._resume(ws, room, admission.resume_sid, grant.identity)
            return ws
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
        may_publish = partial(self.rights.apply, RoomID(grant.room_id), participant, profile)
        context = (ws, room, me, participant, grant, self.focus.tokens, self.media, may_publish)
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
            "v1" if single_pc else "v0",
        )
        try:
            await session.run()
        finally:
            await self._after_connection(session, ws, room.conference_id)
        return ws

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
