"""Reacts to Matrix events from the homeserver: invites to the bot and commands in rooms."""

from __future__ import annotations

from typing import TYPE_CHECKING
import logging

from mautrix.errors import MatrixError
from mautrix.types import (
    Event,
    EventType,
    Membership,
    MemberStateEventContent,
    MessageEvent,
    MessageType,
    StateEvent,
    UserID,
)

from .call_membership import CALL_MEMBER
from .commands import CommandProcessor
from .db import ProcessedEvent, Room
from .permissions import PermissionLevel, level_for

if TYPE_CHECKING:
    from .bridge import Bridge

log = logging.getLogger("mau.matrix")


class MatrixHandler:
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.commands = CommandProcessor(bridge)

    @property
    def bot_mxid(self) -> UserID:
        return self.bridge.az.bot_mxid

    def level(self, user_id: UserID) -> PermissionLevel:
        return level_for(user_id, self.bridge.permissions)

    def is_bridge_user(self, user_id: UserID) -> bool:
        return user_id == self.bot_mxid or self.bridge.is_ghost(user_id)

    async def handle_event(self, evt: Event) -> None:
        """Entry point for every event; one bad event is logged and harms nothing else."""
        if not is_well_formed(evt):
            # Not even its type can be logged safely (str() of an integer type raises).
            log.debug("Ignoring an event whose type, IDs, state key or timestamp are mistyped")
            return
        try:
            if isinstance(evt, StateEvent) and isinstance(evt.content, MemberStateEventContent):
                await self._handle_member(evt, evt.content)
            elif isinstance(evt, MessageEvent) and evt.type == EventType.ROOM_MESSAGE:
                await self._handle_message(evt)
            elif isinstance(evt, StateEvent) and evt.type.t == CALL_MEMBER:
                await self.bridge.call_memberships.handle(evt)
            elif isinstance(evt, StateEvent) and evt.type == EventType.ROOM_POWER_LEVELS:
                # A demotion takes effect on the media at once, not at the next token.
                await self.bridge.publish_rights.apply_to_room(evt.room_id)
            await self.bridge.dialin.handle_event(evt)
            await self.bridge.guests.handle_event(evt)
        except Exception:
            log.exception("Failed to handle %s %s in %s", evt.type, evt.event_id, evt.room_id)

    async def _handle_member(self, evt: StateEvent, content: MemberStateEventContent) -> None:
        membership = content.membership
        if evt.state_key != self.bot_mxid:
            if membership in (Membership.LEAVE, Membership.BAN):
                reason = (
                    "banned from the room" if membership == Membership.BAN else "left the room"
                )
                await self.bridge.signalling.disconnect_user(
                    evt.room_id, UserID(evt.state_key), reason
                )
            elif membership == Membership.KNOCK and await ProcessedEvent.claim(evt.event_id):
                await self.bridge.moderation.knocked(
                    evt.room_id, UserID(evt.state_key), content.reason
                )
            return
        if membership == Membership.INVITE:
            await self._handle_bot_invite(evt)
        elif membership in (Membership.LEAVE, Membership.BAN) and evt.sender != self.bot_mxid:
            log.info("The bot was removed from %s by %s", evt.room_id, evt.sender)

    async def _handle_bot_invite(self, evt: StateEvent) -> None:
        intent = self.bridge.az.intent
        if not self.level(evt.sender).allows(PermissionLevel.USER):
            log.info("Declining invite to %s from %s: not allowed", evt.room_id, evt.sender)
            try:
                await intent.leave_room(
                    evt.room_id,
                    reason="This conference bridge is not available to you. "
                    "Ask the homeserver's admin to add you to its permissions.",
                )
            except MatrixError as e:
                log.warning("Could not decline the invite to %s: %s", evt.room_id, e)
            return
        log.info("Joining %s on invite from %s", evt.room_id, evt.sender)
        await intent.join_room_by_id(evt.room_id)
        await Room.get_or_create(evt.room_id)
        if await ProcessedEvent.claim(evt.event_id):
            prefix = self.bridge.config["bridge.command_prefix"]
            await intent.send_notice(
                evt.room_id,
                f"Hi! I run this room's calls. Send `{prefix} help` to see what I can do.",
                html=f"Hi! I run this room's calls. Send <code>{prefix} help</code> "
                "to see what I can do.",
            )
        # Who may join the room's calls follows its state. Should this fail, a room joined for
        # the first time is loaded on its first token request instead.
        await self.bridge.room_states.load(evt.room_id)

    async def _handle_message(self, evt: MessageEvent) -> None:
        if self.is_bridge_user(evt.sender) or evt.content.msgtype != MessageType.TEXT:
            return
        body = evt.content.body
        if not isinstance(body, str) or not body.lstrip().lower().startswith(
            self.commands.prefix.lower()
        ):
            return
        if not await ProcessedEvent.claim(evt.event_id):
            log.debug("Skipping redelivered command %s", evt.event_id)
            return
        await self.commands.handle(
            evt.room_id, evt.event_id, evt.sender, self.level(evt.sender), body
        )


def is_well_formed(evt: Event) -> bool:
    """Whether the fields every handler relies on have their JSON types. mautrix keeps
    whatever type arrived (an integer ``type`` included), and any room member's homeserver
    can send such an event, or one whose content has fields of the wrong type (which the
    handlers check themselves)."""
    names = ("sender", "room_id", "event_id", "state_key")
    strings = (getattr(evt, name, None) for name in names)
    timestamp = getattr(evt, "timestamp", None)
    return (
        isinstance(evt.type.t, str)
        and all(value is None or isinstance(value, str) for value in strings)
        and (timestamp is None or (isinstance(timestamp, int) and not isinstance(timestamp, bool)))
    )
