"""Who may join a room's call, and who may publish in it, from the room's Matrix state and
the admin's ``bridge.permissions``: the one gate every path asks (tokens, signalling, offers,
``add_track``, dial-in, and the re-check after each change of the room's state).

lk-jwt-service lets anyone with an OpenID token into any call; here the caller must be allowed
to use the bridge at all (level ``user`` in ``bridge.permissions``), be joined to the Matrix
room (so bans and kicks apply), and may publish only with the power level the room requires
for sending call memberships (``org.matrix.msc3401.call.member``), which is how a room
restricts who takes part in its calls. Membership and power levels come from the appservice's
state store, complete for rooms the bot is in (see :mod:`bridge.room_state`).

Moderators (the power level to kick, or ``bridge.moderation.level``; bridge admins everywhere)
may lock a call or remove someone from it; a :class:`CallPolicy` adds those refusals here.
"""

from __future__ import annotations

from typing import Protocol
from dataclasses import dataclass
from enum import StrEnum

from mautrix.client.state_store import StateStore
from mautrix.types import (
    EventType,
    Membership,
    PowerLevelStateEventContent,
    RoomID,
    StateEvent,
    UserID,
)

from ..permissions import PermissionLevel, level_for
from ..room_state import RoomStates
from .errors import Forbidden

CALL_MEMBER = EventType.find("org.matrix.msc3401.call.member", EventType.Class.STATE)


class RoomsWithoutBot(StrEnum):
    """What to do for rooms the bot is not in, whose state the bridge cannot see."""

    DENY = "deny"
    BRIDGE_PERMISSIONS = "bridge_permissions"


class CallPolicy(Protocol):
    """Refusals decided by moderators (removals, a locked call), on top of the room's state."""

    async def refusal(self, room_id: RoomID, user_id: UserID) -> str | None:
        """Why ``user_id`` may not be in the call of ``room_id`` now, or None."""


@dataclass(frozen=True)
class Access:
    can_publish: bool
    can_subscribe: bool = True


class RoomAccess:
    def __init__(
        self,
        rooms: RoomStates,
        bot_mxid: UserID,
        rooms_without_bot: RoomsWithoutBot,
        permissions: dict[str, PermissionLevel],
        moderation_level: int | None = None,
    ) -> None:
        """``moderation_level``: the power level moderators need; None: the room's level to
        kick."""
        self.rooms = rooms
        self.bot_mxid = bot_mxid
        self.rooms_without_bot = rooms_without_bot
        self.permissions = permissions
        self.moderation_level = moderation_level
        self.policy: CallPolicy | None = None

    @property
    def store(self) -> StateStore:
        return self.rooms.store

    async def check(self, room_id: RoomID, user_id: UserID) -> Access:
        """What ``user_id`` may do in the call of ``room_id``.

        Raises:
            Forbidden: the caller may not join the call at all; the message says why.
        """
        if not await self.store.is_joined(room_id, self.bot_mxid):
            return self._without_bot(user_id)
        if not level_for(user_id, self.permissions).allows(PermissionLevel.USER):
            raise Forbidden("This conference bridge is not available to you.")
        await self.rooms.ensure_loaded(room_id)
        membership = await self.store.get_membership(room_id, user_id)
        if membership == Membership.BAN:
            raise Forbidden("You are banned from this room.")
        if membership != Membership.JOIN:
            raise Forbidden("Only members of the room can join its call; join the room first.")
        refusal = await self.policy.refusal(room_id, user_id) if self.policy else None
        if refusal is not None:
            raise Forbidden(refusal)
        return Access(can_publish=await self._may_send_call_member(room_id, user_id))

    async def may_publish(self, room_id: RoomID, user_id: UserID) -> bool:
        """Whether ``user_id`` may send media in the call of ``room_id`` right now."""
        try:
            return (await self.check(room_id, user_id)).can_publish
        except Forbidden:
            return False

    async def may_moderate(self, room_id: RoomID, user_id: UserID) -> bool:
        """Whether ``user_id`` may moderate the call of ``room_id``: a bridge admin, or a
        member of a room the bot is in with the moderation power level."""
        level = level_for(user_id, self.permissions)
        if level.allows(PermissionLevel.ADMIN):
            return True
        if not level.allows(PermissionLevel.USER) or not await self.store.is_joined(
            room_id, self.bot_mxid
        ):
            return False
        await self.rooms.ensure_loaded(room_id)
        if await self.store.get_membership(room_id, user_id) != Membership.JOIN:
            return False
        levels, create = await self._power_levels(room_id)
        needed = levels.kick if self.moderation_level is None else self.moderation_level
        return levels.get_user_level(user_id, create) >= needed

    def _without_bot(self, user_id: UserID) -> Access:
        if self.rooms_without_bot == RoomsWithoutBot.BRIDGE_PERMISSIONS and level_for(
            user_id, self.permissions
        ).allows(PermissionLevel.USER):
            return Access(can_publish=True)
        raise Forbidden(
            f"The conference bridge is not in this room. Invite {self.bot_mxid} to hold calls "
            "here."
        )

    async def _power_levels(
        self, room_id: RoomID
    ) -> tuple[PowerLevelStateEventContent, StateEvent | None]:
        create = await self.store.get_create(room_id)
        levels = await self.store.get_power_levels(room_id)
        if levels is None:
            # A room without power levels: its creator has 100, everyone else 0, and any
            # state event needs 0 (the spec's defaults).
            creator = {create.sender: 100} if create is not None else {}
            levels = PowerLevelStateEventContent(users=creator, state_default=0)
        return levels, create

    async def _may_send_call_member(self, room_id: RoomID, user_id: UserID) -> bool:
        levels, create = await self._power_levels(room_id)
        return levels.get_user_level(user_id, create) >= levels.get_event_level(CALL_MEMBER)
