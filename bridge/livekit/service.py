"""The signalling endpoints on the focus listener, checked against the focus's tokens and the
room's Matrix state: protocol v1 at ``/rtc/v1`` (one peer connection; livekit-client's default
and Element Call's) and v0 at ``/rtc`` (two; older clients, the Flutter SDK, and
livekit-client's fallback when v1 fails), each with its ``/validate`` twin, which
livekit-client asks to explain a failed connection. An admitted connection is served by the
media that carries its conference (:class:`~bridge.livekit.host.LiveKitHost`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from dataclasses import dataclass
from functools import partial
import logging

from aiohttp import web
from mautrix.types import RoomID, UserID

from ..conferences import Via
from ..db import Room
from ..focus.errors import Forbidden
from ..focus.tokens import FocusGrant, InvalidFocusToken
from .host import Admission
from .protocol import ProtocolViolation, connect_request

if TYPE_CHECKING:
    from ..focus import Focus
    from ..media import MediaPlane

log = logging.getLogger("mau.livekit")


@dataclass(frozen=True)
class SessionLimits:
    """Bounds on signalling sessions, so no user or room can take the whole server."""

    per_user: int = 5
    """Connections one Matrix user may hold at once, all rooms together."""
    per_room: int = 100
    """Participants one room's call may hold, however they joined."""


class LiveKitSignalling:
    def __init__(self, focus: Focus, media: MediaPlane, limits: SessionLimits) -> None:
        self.focus = focus
        self.media = media
        self.limits = limits

    def add_routes(self, app: web.Application) -> None:
        for path, single_pc in (("/rtc", False), ("/rtc/v1", True)):
            app.router.add_get(path, partial(self._connect, single_pc=single_pc))
            app.router.add_get(f"{path}/validate", partial(self._validate, single_pc=single_pc))

    async def disconnect_user(
        self, room_id: RoomID, user_id: UserID, reason: str, device_id: str | None = None
    ) -> None:
        """Remove a user's LiveKit connections (or one device's) from a room's call: banned,
        kicked, left the room or the call. Their dial-in calls are not ours: dial-in hangs them
        up, telling the caller why."""
        for conference_id, participant_id, profile in await self.media.roster.in_room(room_id):
            if (
                profile.via is Via.MATRIXRTC
                and profile.user_id == user_id
                and device_id in (None, profile.device_id)
            ):
                log.info("Removing %s from the call in %s: %s", user_id, room_id, reason)
                await self.media.remove(conference_id, participant_id, reason)

    # ------------------------------------------------------------------ HTTP

    async def _admit(self, request: web.Request, single_pc: bool) -> Admission:
        """Check the request, its token and, again, the room: the token may be an hour old.

        Raises:
            web.HTTPException: 400, 401 or 403 with a reason the client shows.
        """
        try:
            connect = connect_request(request, single_pc=single_pc)
        except ProtocolViolation as e:
            raise web.HTTPBadRequest(text=str(e)) from e
        grant, conference_id, can_publish = await self.decide(connect.token)
        return Admission.of(connect, grant, conference_id, can_publish)

    async def decide(self, token: str) -> tuple[FocusGrant, str, bool]:
        """Whether a token's holder may connect now (also asked by media nodes, whose
        clients connect there): the grant, the conference and whether it may publish.

        Raises:
            web.HTTPException: 401, 403, 429 or 503 with a reason the client shows.
        """
        try:
            grant = self.focus.verify(token)
        except InvalidFocusToken as e:
            raise web.HTTPUnauthorized(text=str(e)) from e
        try:
            access = await self.focus.access.check(RoomID(grant.room_id), UserID(grant.user_id))
        except Forbidden as e:
            raise web.HTTPForbidden(text=str(e)) from e
        room = await Room.get_or_create(RoomID(grant.room_id))
        self._check_limits(room.conference_id, grant)
        return grant, room.conference_id, access.can_publish

    async def decide_for_node(self, token: str) -> dict[str, Any]:
        """:meth:`decide` for a media node's client, as the node's control channel carries
        it: the conference and publish right, or the HTTP status and text to refuse with."""
        try:
            _, conference_id, can_publish = await self.decide(token)
        except web.HTTPException as e:
            return {"status": e.status, "text": e.text or e.reason}
        return {"conference_id": conference_id, "can_publish": can_publish}

    def _check_limits(self, conference_id: str, grant: FocusGrant) -> None:
        """Refuse a connection beyond the limits; a client reconnecting with the identity it
        already has is not counted twice (it replaces its stale session).

        Raises:
            web.HTTPException: 429 for a user over the limit, 503 for a full call or server.
        """
        if not self.media.accepts_newcomers(conference_id):
            raise web.HTTPServiceUnavailable(
                text="The media server is busy connecting others; try again in a moment."
            )
        per_user = in_room = 0
        for member_conference, _, profile in self.media.roster.members():
            if profile.identity == grant.identity:
                continue
            in_room += member_conference == conference_id
            if profile.user_id == grant.user_id:
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

    async def _connect(self, request: web.Request, single_pc: bool) -> web.StreamResponse:
        admission = await self._admit(request, single_pc)
        return await self.media.serve_signalling(request, admission)
