"""What a room's moderators do to its call: mute, remove, end, lock, the moderated mode, and
admitting people who knock. :meth:`RoomAccess.may_moderate` decides who is a moderator; this
carries their decisions out on the media, records them in the call history, and, as the
gate's :class:`~bridge.focus.access.CallPolicy`, refuses removed users and newcomers to a
locked call on every path (tokens, signalling, dial-in).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
import logging
import math
import time

from mautrix.types import Membership, RoomID, UserID
from mautrix.util import background_task, markdown

from sfu import ParticipantState, TrackKind

from .db import Call, CallParticipant, CallRemoval, ModerationAction, Room, RoomMode, RoomModeName
from .media import Member, Presence

if TYPE_CHECKING:
    from .bridge import Bridge

log = logging.getLogger("mau.moderation")


def _now_ms() -> int:
    return int(time.time() * 1000)


class Moderation:
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self._held: dict[tuple[str, str], frozenset[TrackKind]] = {}
        """Kinds held muted in moderated calls, by (conference id, user id): kept when the
        user reconnects."""
        bridge.media.roster.listen(self._on_presence)
        bridge.focus.access.policy = self

    # ------------------------------------------------------------------ the gate

    async def refusal(self, room_id: RoomID, user_id: UserID) -> str | None:
        """Why ``user_id`` may not be in the call now: removed by a moderator, or new to a
        locked call (moderators and those already in the call still get in)."""
        now = _now_ms()
        removal = await CallRemoval.active(room_id, user_id, now)
        if removal is not None:
            minutes = math.ceil((removal.expires_at - now) / 60_000)
            return (
                f"A moderator removed you from this room's call ({removal.reason}); you can "
                f"join again in {minutes} min."
            )
        if await RoomMode.is_on(room_id, RoomModeName.LOCKED) and not (
            await self._in_call(room_id, user_id)
            or await self.bridge.focus.access.may_moderate(room_id, user_id)
        ):
            return "This room's call is locked: a moderator must unlock it to let you in."
        return None

    async def _in_call(self, room_id: RoomID, user_id: UserID) -> bool:
        """In the call now (perhaps not yet recorded), or earlier in this call."""
        if await self._participants_of(room_id, user_id):
            return True
        active = await Call.get_active(room_id)
        return active is not None and await CallParticipant.was_in(active.call_id, user_id)

    # ------------------------------------------------------------------ actions

    async def mute(self, room_id: RoomID, user_id: UserID, kinds: frozenset[TrackKind]) -> bool:
        """Stop forwarding the user's tracks of ``kinds`` and tell their clients; in a
        moderated call they stay muted. False: the user is not in the call."""
        found = await self._participants_of(room_id, user_id)
        if not found:
            return False
        hold = await self.is_moderated(room_id)
        conference_id = found[0].conference_id
        if hold:
            kinds = kinds | self._held.get((conference_id, user_id), frozenset())
            self._held[conference_id, user_id] = kinds
        for member in found:
            await self.bridge.media.mute(conference_id, member.participant_id, kinds, hold)
        return True

    async def is_moderated(self, room_id: RoomID) -> bool:
        return await RoomMode.is_on(room_id, RoomModeName.MODERATED)

    async def release(self, room_id: RoomID, user_id: UserID) -> bool:
        """Let a user held muted unmute again; False if they were not held."""
        room = await Room.get(room_id)
        if room is None or self._held.pop((room.conference_id, user_id), None) is None:
            return False
        for member in await self._participants_of(room_id, user_id):
            await self.bridge.media.hold(member.conference_id, member.participant_id, frozenset())
        return True

    async def set_mode(self, room_id: RoomID, mode: RoomModeName, on: bool, by: UserID) -> bool:
        """Switch a call mode; False if it already was so. Leaving the moderated mode lets
        everyone held muted unmute again."""
        room = await Room.get_or_create(room_id)
        changed = await RoomMode.set(room_id, mode, on, by, _now_ms())
        if mode is RoomModeName.MODERATED and not on:
            for conference_id, user_id in list(self._held):
                if conference_id == room.conference_id:
                    await self.release(room_id, UserID(user_id))
        return changed

    async def remove(self, room_id: RoomID, user_id: UserID, by: UserID, reason: str) -> bool:
        """Disconnect the user from the call and refuse them for ``removal_minutes``.
        False: they were not in the call (they are refused all the same)."""
        minutes = self.bridge.config["bridge.moderation.removal_minutes"]
        await Room.get_or_create(room_id)
        await CallRemoval(room_id, user_id, _now_ms() + minutes * 60_000, by, reason).save()
        found = await self._participants_of(room_id, user_id)
        for member in found:
            log.info("Removing %s from the call in %s on a moderator's request", user_id, room_id)
            await self.bridge.media.remove(
                member.conference_id, member.participant_id, f"removed by a moderator: {reason}"
            )
        return bool(found)

    async def end(self, room_id: RoomID) -> int:
        """Disconnect everyone from the call; how many participants there were."""
        room = await Room.get(room_id)
        if room is None:
            return 0
        count = await self.bridge.media.end(
            room.conference_id, "the call was ended by a moderator"
        )
        log.info("A moderator ended the call in %s", room_id)
        return count

    async def record(
        self, room_id: RoomID, actor: UserID, action: str, target: str | None, detail: str
    ) -> None:
        """Add the action to the room's call history (to the running call, if any)."""
        await Room.get_or_create(room_id)
        active = await Call.get_active(room_id)
        await ModerationAction(
            room_id,
            active.call_id if active else None,
            actor,
            action,
            target,
            detail,
            _now_ms(),
        ).insert()

    # ------------------------------------------------------------------ the lobby

    async def knocked(self, room_id: RoomID, user_id: UserID, reason: str | None) -> None:
        """Announce a knock with the command that lets the user in."""
        prefix = self.bridge.config["bridge.command_prefix"]
        asks = f" ({reason.strip()})" if isinstance(reason, str) and reason.strip() else ""
        text = (
            f"{user_id} asks to join this room{asks}. A moderator can let them in with "
            f"`{prefix} admit {user_id}`."
        )
        await self.bridge.az.intent.send_notice(room_id, text, html=markdown.render(text))

    async def is_knocking(self, room_id: RoomID, user_id: UserID) -> bool:
        store = self.bridge.state_store
        return await store.get_membership(room_id, user_id) == Membership.KNOCK

    # ------------------------------------------------------------------ internals

    async def _participants_of(self, room_id: RoomID, user_id: UserID) -> list[Member]:
        return [
            member
            for member in await self.bridge.media.roster.in_room(room_id)
            if member.profile.user_id == user_id
        ]

    def _on_presence(self, presence: Presence) -> None:
        """A user held muted who reconnects stays muted; an emptied call forgets its holds."""
        roster = self.bridge.media.roster
        if presence.state is ParticipantState.DISCONNECTED:
            if not roster.members(presence.conference_id):
                self._forget_holds(presence.conference_id)
            return
        if presence.state is not ParticipantState.JOINED:
            return
        held = self._held.get((presence.conference_id, presence.profile.user_id))
        if held:
            background_task.create(
                self.bridge.media.hold(presence.conference_id, presence.participant_id, held)
            )

    def _forget_holds(self, conference_id: str) -> None:
        for key in [key for key in self._held if key[0] == conference_id]:
            del self._held[key]
