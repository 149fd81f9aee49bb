"""Guests: people without a Matrix account who join a room's call through a guest link.

Each guest becomes a ghost user of the bridge (``<ghost prefix>guest_<random>``, named
"<name> (guest)"), so the room sees who joins and leaves. The ghost joins the room (invited
by the bot) or, in rooms with the ``knock`` join rule, knocks and waits for a moderator's
``!call admit``; then it gets a device and an access token of its own (an appservice login),
which the guest's Element Call uses like anyone's. What the guest may do in the call is what
:class:`~bridge.focus.access.RoomAccess` allows the ghost. When the guest's participant
leaves the call for good, the ghost leaves the room and its device (with the token) is
deleted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from dataclasses import dataclass
import logging
import secrets
import time

from mautrix.api import Method, Path
from mautrix.errors import MatrixError
from mautrix.types import (
    Event,
    EventType,
    JoinRule,
    JoinRulesStateEventContent,
    LoginType,
    Membership,
    MemberStateEventContent,
    RoomID,
    StateEvent,
    UserID,
)
from mautrix.util import background_task

from sfu import ParticipantState

from ..db import Guest, GuestLink, Room
from ..focus.errors import FocusError
from ..focus.rate_limit import RateLimited
from ..media import Presence
from .links import (
    JoinLimits,
    LinkState,
    guest_display_name,
    hash_secret,
    lifetime_ms,
    new_link_id,
    new_secret,
    parse_secret,
    state_of,
)

if TYPE_CHECKING:
    from ..bridge import Bridge
    from ..config import GuestSettings

log = logging.getLogger("mau.guests")

UNSEATED_GUEST_MS = 3600 * 1000
"""A guest not in the call this long after arriving (left the lobby page, never joined) is
cleared away by the hourly prune."""


def _now_ms() -> int:
    return int(time.time() * 1000)


class GuestRefused(FocusError):
    """The link cannot be used (unknown, expired, revoked) or the guest cannot be let in."""

    status = 403
    errcode = "M_FORBIDDEN"


class UnknownLink(GuestRefused):
    status = 404
    errcode = "M_NOT_FOUND"


class LinkGone(GuestRefused):
    """Expired or revoked."""

    status = 410


_LINK_GONE = {
    LinkState.EXPIRED: "This guest link has expired. Ask the person who sent it for a new one.",
    LinkState.REVOKED: "This guest link was revoked. Ask the person who sent it for a new one.",
}
UNKNOWN_LINK = (
    "This guest link does not exist (any more). Ask the person who sent it for a new one."
)


@dataclass
class GuestSession:
    """A guest's page between joining and handing over to the call client."""

    user_id: UserID
    room_id: RoomID


class Guests:
    def __init__(self, bridge: Bridge, settings: GuestSettings) -> None:
        self.bridge = bridge
        self.settings = settings
        self.limits = JoinLimits(
            settings.joins_per_minute_per_link, settings.joins_per_minute_per_client
        )
        self._sessions: dict[str, GuestSession] = {}
        """By the session secret the guest's page holds."""
        bridge.media.roster.listen(self._on_presence)

    # ------------------------------------------------------------------ links

    @property
    def base_url(self) -> str:
        """The focus listener as clients reach it: links and Element Call are served there."""
        config = self.bridge.config
        public = config["focus.public_url"]
        base = public or f"http://{config['focus.hostname']}:{config['focus.port']}"
        return str(base).rstrip("/")

    def link_url(self, secret: str) -> str:
        return f"{self.base_url}/guest/{secret}"

    async def create_link(
        self, room_id: RoomID, by: UserID, hours: str | None
    ) -> tuple[GuestLink, str]:
        """A new link and its URL (the only place the secret is ever seen).

        Raises:
            ValueError: ``hours`` is not an allowed lifetime; says why.
        """
        lifetime = lifetime_ms(hours, self.settings.default_hours, self.settings.max_hours)
        await Room.get_or_create(room_id)
        now = _now_ms()
        secret = new_secret()
        link = GuestLink(new_link_id(), room_id, hash_secret(secret), by, now, now + lifetime)
        await link.insert()
        log.info("%s created guest link %s for %s", by, link.link_id, room_id)
        return link, self.link_url(secret)

    async def usable_link(self, path_secret: str) -> GuestLink:
        """The live link a guest's URL names.

        Raises:
            GuestRefused: guest links are switched off.
            UnknownLink, LinkGone: unknown (404), expired or revoked (410).
        """
        if not self.settings.enabled:
            raise GuestRefused("Guest links are switched off on this server.")
        secret = parse_secret(path_secret)
        link = await GuestLink.by_secret_hash(hash_secret(secret)) if secret else None
        if link is None:
            raise UnknownLink(UNKNOWN_LINK)
        state = state_of(link, _now_ms())
        if state is not LinkState.LIVE:
            raise LinkGone(_LINK_GONE[state])
        return link

    # ------------------------------------------------------------------ arriving

    async def arrive(self, path_secret: str, typed_name: str, client: str) -> tuple[str, str]:
        """A guest entered a name on the link's page: make its ghost and let it into the
        room, or knock. Returns the session secret for the page and the state
        (``ready`` or ``waiting``).

        Raises:
            GuestRefused, RateLimited: with the message for the guest.
        """
        link = await self.usable_link(path_secret)
        wait = self.limits.check(link.link_id, client, time.monotonic())
        if wait:
            raise RateLimited("Too many guests at once; try again in a minute.", wait)
        try:
            name = guest_display_name(typed_name)
        except ValueError as e:
            raise GuestRefused(str(e)) from None
        user_id = UserID(
            f"@{self.bridge.config.ghost_localpart(f'guest_{secrets.token_hex(6)}')}"
            f":{self.bridge.config['homeserver.domain']}"
        )
        intent = self.bridge.az.intent.user(user_id)
        try:
            await intent.ensure_registered()
            await intent.set_displayname(name)
            await link.count_use()
            await Guest(user_id, link.room_id, link.link_id, _now_ms()).insert()
            if await self._asks_to_knock(link.room_id):
                await intent.knock_room(
                    link.room_id, reason=f"{name}, through guest link {link.link_id}"
                )
                state = "waiting"
            else:
                await self.bridge.az.intent.invite_user(
                    link.room_id, user_id, reason=f"Guest link {link.link_id}"
                )
                await intent.join_room_by_id(link.room_id)
                state = "ready"
        except MatrixError as e:
            log.warning("Could not let a guest into %s: %s", link.room_id, e)
            raise GuestRefused(f"The bridge could not let you into the room: {e}") from e
        log.info("Guest %s arrived through link %s", user_id, link.link_id)
        session = secrets.token_urlsafe(24)
        self._sessions[session] = GuestSession(user_id, link.room_id)
        return session, state

    async def _asks_to_knock(self, room_id: RoomID) -> bool:
        """The room's lobby: its join rule lets people ask to join (knock)."""
        content = await self.bridge.az.intent.get_state_event(room_id, EventType.ROOM_JOIN_RULES)
        return isinstance(content, JoinRulesStateEventContent) and content.join_rule in (
            JoinRule.KNOCK,
            JoinRule.KNOCK_RESTRICTED,
        )

    async def progress(self, session_secret: str) -> dict[str, Any]:
        """Where a guest's page stands: ``waiting`` in the lobby, or ``ready`` with the
        ghost's session for Element Call (handed over once; the page keeps it).

        Raises:
            GuestRefused: no such session, or the guest was not let in.
        """
        session = self._sessions.get(session_secret)
        if session is None:
            raise GuestRefused("This guest session is over; open the link again.")
        membership = await self.bridge.state_store.get_membership(session.room_id, session.user_id)
        if membership in (Membership.KNOCK, Membership.INVITE):
            return {"state": "waiting"}
        if membership != Membership.JOIN:
            del self._sessions[session_secret]
            raise GuestRefused("A moderator did not let you into this call.")
        del self._sessions[session_secret]
        try:
            login = await self._log_in(session.user_id)
        except MatrixError as e:
            log.warning("Could not log guest %s in: %s", session.user_id, e)
            raise GuestRefused(f"The bridge could not sign you in: {e}") from e
        guest = await Guest.get(session.user_id)
        if guest is not None:
            await guest.set_device(login["device_id"])
        return {"state": "ready", **login, "room_id": session.room_id}

    async def _log_in(self, user_id: UserID) -> dict[str, str]:
        """A new device of the ghost with its own access token: an appservice login
        (mautrix's ``login`` cannot be used through an appservice's API object)."""
        response = await self.bridge.az.intent.user(user_id).api.request(
            Method.POST,
            Path.v3.login,
            {
                "type": str(LoginType.APPSERVICE),
                "identifier": {"type": "m.id.user", "user": user_id},
                "initial_device_display_name": "Guest (Element Call)",
            },
        )
        return {
            "user_id": str(response["user_id"]),
            "device_id": str(response["device_id"]),
            "access_token": str(response["access_token"]),
        }

    async def handle_event(self, evt: Event) -> None:
        """A guest admitted from the lobby (invited) joins; one turned away or kicked goes."""
        if not (isinstance(evt, StateEvent) and isinstance(evt.content, MemberStateEventContent)):
            return
        user_id = UserID(evt.state_key)
        if not self.bridge.is_ghost(user_id) or evt.sender == user_id:
            return
        guest = await Guest.get(user_id)
        if guest is None or guest.room_id != evt.room_id:
            return
        if evt.content.membership == Membership.INVITE:
            # Invited when admitted from the lobby; a guest let in at once has joined already.
            store = self.bridge.state_store
            if await store.get_membership(evt.room_id, user_id) != Membership.JOIN:
                await self.bridge.az.intent.user(user_id).join_room_by_id(evt.room_id)
        elif evt.content.membership in (Membership.LEAVE, Membership.BAN):
            await self.farewell(guest)

    # ------------------------------------------------------------------ leaving

    def _on_presence(self, event: Presence) -> None:
        if event.state is not ParticipantState.DISCONNECTED:
            return
        if self.bridge.is_ghost(UserID(event.profile.user_id)):
            background_task.create(self._left_call(event.conference_id, event.profile.user_id))

    async def _left_call(self, conference_id: str, user_id: str) -> None:
        guest = await Guest.get(user_id)
        if guest is None or await self._in_call(guest):
            return
        log.info("Guest %s left the call", user_id)
        await self.farewell(guest)

    async def _in_call(self, guest: Guest) -> bool:
        return any(
            profile.user_id == guest.user_id
            for _, _, profile in await self.bridge.media.roster.in_room(guest.room_id)
        )

    async def farewell(self, guest: Guest) -> None:
        """The ghost leaves the room, its device and access token are deleted, and the
        guest is forgotten."""
        await guest.delete()
        for secret, session in list(self._sessions.items()):
            if session.user_id == guest.user_id:
                del self._sessions[secret]
        intent = self.bridge.az.intent.user(guest.user_id)
        membership = await self.bridge.state_store.get_membership(guest.room_id, guest.user_id)
        try:
            if membership in (Membership.JOIN, Membership.INVITE, Membership.KNOCK):
                await intent.leave_room(guest.room_id, reason="The guest left the call")
            if guest.device_id is not None:
                await intent.api.request(Method.DELETE, Path.v3.devices[guest.device_id])
        except MatrixError as e:
            log.warning("Could not clear guest %s away: %s", guest.user_id, e)

    async def prune(self, now: int) -> None:
        """Forget expired links, and clear away guests who never got into the call."""
        await GuestLink.delete_expired(now)
        for guest in await Guest.created_before(now - UNSEATED_GUEST_MS):
            if not await self._in_call(guest):
                await self.farewell(guest)
