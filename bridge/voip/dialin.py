"""Legacy VoIP dial-in: 1:1-call clients call a room's ghost and land in its conference.

Each room gets a dial-in ghost on request (``!call dialin``). Members open a direct chat with
it and place an ordinary Matrix call there (``m.call.*`` room events); the ghost answers for
members of its room and joins the call into the room's conference as a :class:`MediaLeg`.
Leaving the room, hanging up on either side, or the media failing ends the call everywhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
import asyncio
import logging
import time

from mautrix.errors import MatrixError
from mautrix.types import (
    Event,
    EventType,
    Membership,
    MemberStateEventContent,
    RoomID,
    RoomNameStateEventContent,
    StateEvent,
    UserID,
)

from sfu import ParticipantState

from ..conferences import Profile, Via
from ..db import DialInChat, DialInGhost, ProcessedEvent, Room
from ..focus.errors import Forbidden
from ..media import Presence
from ..permissions import PermissionLevel, level_for
from . import signalling as sig
from .call import CallKey, DialInCall
from .media_link import LegLink

if TYPE_CHECKING:
    from ..bridge import Bridge

log = logging.getLogger("mau.voip")


class DialIn:
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.config = bridge.config
        self._calls: dict[CallKey, DialInCall] = {}
        self._hangups: set[asyncio.Task[None]] = set()
        bridge.media.roster.listen(self._on_presence)

    @property
    def calls(self) -> list[DialInCall]:
        return list(self._calls.values())

    async def stop(self) -> None:
        """Hang up every call, so that callers are not left in a silent call."""
        await asyncio.gather(
            *(call.hang_up(sig.HangupReason.USER_HANGUP) for call in self.calls),
            return_exceptions=True,
        )

    # ------------------------------------------------------------------ ghosts

    async def ghost_for_room(self, room_id: RoomID) -> UserID:
        """The room's dial-in ghost, registered and named after the room."""
        room = await Room.get_or_create(room_id)
        localpart = self.config.ghost_localpart(f"dialin_{room.conference_id[:16]}")
        wanted = UserID(f"@{localpart}:{self.config['homeserver.domain']}")
        ghost = await DialInGhost.get_or_create(room_id, wanted)
        intent = self.bridge.az.intent.user(ghost.user_id)
        await intent.ensure_registered()
        name = await self._room_name(room_id)
        await intent.set_displayname(
            str(self.config["dialin.displayname"]).format(room=name)[:200]
        )
        return ghost.user_id

    async def _room_name(self, room_id: RoomID) -> str:
        try:
            content = await self.bridge.az.intent.get_state_event(room_id, EventType.ROOM_NAME)
        except MatrixError:
            return room_id
        if isinstance(content, RoomNameStateEventContent) and content.name:
            return content.name
        return room_id

    # ------------------------------------------------------------------ Matrix events

    async def handle_event(self, evt: Event) -> None:
        """Every event the bridge receives; those not about dial-in are ignored cheaply."""
        if isinstance(evt, StateEvent) and isinstance(evt.content, MemberStateEventContent):
            await self._on_member(evt, evt.content)
        elif str(evt.type) in sig.CALL_EVENT_TYPES and not self.bridge.matrix.is_bridge_user(
            evt.sender
        ):
            await self._on_call_event(evt)

    async def _on_member(self, evt: StateEvent, content: MemberStateEventContent) -> None:
        user_id = UserID(evt.state_key)
        if content.membership == Membership.INVITE and self.bridge.is_ghost(user_id):
            ghost = await DialInGhost.get_by_user(user_id)
            if ghost is not None:
                await self._on_ghost_invite(evt, ghost)
        elif content.membership in (Membership.LEAVE, Membership.BAN):
            for call in self.calls:
                if call.caller == user_id and evt.room_id in (call.room_id, call.key.chat_room_id):
                    reason = (
                        sig.HangupReason.NOT_A_MEMBER
                        if evt.room_id == call.room_id
                        else sig.HangupReason.USER_HANGUP
                    )
                    await call.hang_up(reason)

    async def _on_ghost_invite(self, evt: StateEvent, ghost: DialInGhost) -> None:
        intent = self.bridge.az.intent.user(ghost.user_id)
        chat = await DialInChat.get(evt.room_id)
        refusal = None
        if not level_for(evt.sender, self.bridge.permissions).allows(PermissionLevel.USER):
            refusal = "This conference bridge is not available to you."
        elif chat is not None and chat.ghost_user_id != ghost.user_id:
            refusal = "This chat already has another dial-in; start a new chat with me."
        if refusal is not None:
            log.info("%s declines the chat %s from %s", ghost.user_id, evt.room_id, evt.sender)
            try:
                await intent.leave_room(evt.room_id, reason=refusal)
            except MatrixError as e:
                log.warning("Could not decline the chat %s: %s", evt.room_id, e)
            return
        await intent.join_room_by_id(evt.room_id)
        await DialInChat.insert(evt.room_id, ghost.user_id, evt.sender)
        if await ProcessedEvent.claim(evt.event_id):
            name = await self._room_name(ghost.room_id)
            await intent.send_notice(
                evt.room_id,
                f"Call me (voice or video) to join the call of {name}. "
                "Only members of that room get through.",
            )

    async def _on_call_event(self, evt: Event) -> None:
        event_type = str(evt.type)
        raw: Any = evt.content.serialize() if hasattr(evt.content, "serialize") else None
        try:
            content = sig.parse(event_type, raw)
        except sig.MalformedCallEvent as e:
            log.warning(
                "Ignoring malformed %s %s from %s: %s", event_type, evt.event_id, evt.sender, e
            )
            return
        key = CallKey(evt.room_id, content.call_id)
        if event_type == sig.INVITE:
            await self._on_invite(evt, key, content)
            return
        call = self._calls.get(key)
        if call is None or not call.from_caller(content):
            return  # not ours, another device of the caller, or long over
        if event_type == sig.CANDIDATES:
            call.submit(lambda: call.on_candidates(content))
        elif event_type == sig.NEGOTIATE:
            call.submit(lambda: call.on_negotiate(content))
        elif event_type == sig.SELECT_ANSWER:
            call.submit(lambda: call.on_select_answer(content))
        elif event_type == sig.STREAM_METADATA_CHANGED:
            call.submit(lambda: call.on_metadata(content))
        elif event_type in (sig.HANGUP, sig.REJECT):
            reason = content.reason or "rejected"
            call.submit(lambda: call.end(f"the caller hung up ({reason})"))

    async def _on_invite(self, evt: Event, key: CallKey, content: sig.CallEventContent) -> None:
        chat = await DialInChat.get(evt.room_id)
        if chat is None or key in self._calls:
            return
        if content.invitee is not None and content.invitee != chat.ghost_user_id:
            return
        # Call events carry no parsed ``unsigned``: the age comes from the origin timestamp.
        age = int(time.time() * 1000) - evt.timestamp
        if content.lifetime is not None and age > content.lifetime:
            log.info("Ignoring the expired call %s from %s", content.call_id, evt.sender)
            return
        ghost = await DialInGhost.get_by_user(chat.ghost_user_id)
        if ghost is None:
            return
        for call in self.calls:
            # Calling again in the same chat replaces the older call, as 1:1 clients do.
            if call.key.chat_room_id == evt.room_id and call.caller == evt.sender:
                await call.hang_up(sig.HangupReason.USER_HANGUP)
        intent = self.bridge.az.intent.user(ghost.user_id)
        call = DialInCall(key, evt.sender, ghost.room_id, intent, content, self._forget)
        self._calls[key] = call
        call.submit(lambda: self._admit(call))

    async def _admit(self, call: DialInCall) -> None:
        """Check who calls, then answer into the conference, or hang up saying why."""
        refusal = await self._refusal(call)
        if refusal is not None:
            reason, text = refusal
            log.info("Refusing %s: %s", call, reason)
            try:
                await call.ghost.send_notice(call.key.chat_room_id, text)
            except MatrixError as e:
                log.warning("Could not explain the refusal of %s: %s", call, e)
            await call.hang_up(reason)
            return
        room = await Room.get_or_create(call.room_id)
        member = await self.bridge.room_states.store.get_member(call.room_id, call.caller)
        profile = Profile(
            call.caller,
            # 1:1 clients use their device id as party id (matrix-js-sdk does).
            call.invite.party_id or "dialin",
            Via.LEGACY_VOIP,
            display_name=(member.displayname or "") if member else "",
        )
        leg = LegLink(
            self.bridge.media, room.conference_id, f"{call.caller}:voip:{call.key.call_id}"
        )
        await self.bridge.media.open_leg(leg.conference_id, leg.id, profile)
        await self.bridge.publish_rights.apply(call.room_id, leg.conference_id, leg.id, profile)
        await call.answer(leg)

    async def _refusal(self, call: DialInCall) -> tuple[str, str] | None:
        reasons = sig.HangupReason
        if not self.config["dialin.enabled"]:
            return reasons.DISABLED, "Dial-in is switched off on this bridge."
        store = self.bridge.room_states.store
        bot = self.bridge.az.bot_mxid
        if not await store.is_joined(call.room_id, bot):
            return reasons.NOT_A_MEMBER, "The bridge is no longer in this conference's room."
        try:
            await self.bridge.focus.access.check(call.room_id, call.caller)
        except Forbidden as e:
            return reasons.NOT_A_MEMBER, str(e)
        if await store.is_encrypted(call.room_id):
            return (
                reasons.ENCRYPTED,
                "This room's calls are end-to-end encrypted, which a 1:1 call cannot join: "
                "the bridge cannot mix audio it cannot decrypt. Join with Element Call instead.",
            )
        limit = self.config["dialin.max_calls_per_room"]
        active = [c for c in self.calls if c.room_id == call.room_id and c.leg is not None]
        if limit and len(active) >= limit:
            return reasons.USER_BUSY, "This conference has as many dial-in calls as it allows."
        return None

    def _forget(self, call: DialInCall) -> None:
        if self._calls.get(call.key) is call:
            del self._calls[call.key]

    # ------------------------------------------------------------------ media events

    def _on_presence(self, presence: Presence) -> None:
        """A leg the media dropped (its transport failed, its worker died) ends the call on
        the Matrix side too."""
        if presence.state is not ParticipantState.DISCONNECTED:
            return
        for call in self.calls:
            if call.leg is not None and call.leg.id == presence.participant_id and not call.ended:
                task = asyncio.create_task(call.hang_up(sig.HangupReason.ICE_FAILED))
                self._hangups.add(task)
                task.add_done_callback(self._hangups.discard)
