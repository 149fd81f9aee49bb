"""Keeps every participant's right to publish in line with its room.

The decision is :meth:`RoomAccess.may_publish` (room state and ``bridge.permissions``); this
applies it to the SFU, which unpublishes at once whoever lost the right, however they joined
(Element Call, dial-in). It runs when someone joins, whenever a participant asks to publish,
and after every change of a room's power levels.
"""

from __future__ import annotations

import logging

from mautrix.types import RoomID, UserID

from sfu import Participant

from .conferences import Conferences, Profile
from .focus.access import RoomAccess

log = logging.getLogger("mau.publishing")


class PublishRights:
    def __init__(self, access: RoomAccess, conferences: Conferences) -> None:
        self.access = access
        self.conferences = conferences

    async def apply(self, room_id: RoomID, participant: Participant, profile: Profile) -> bool:
        """Decide now whether ``participant`` may publish, tell the SFU, and return it."""
        allowed = profile.may_publish and await self.access.may_publish(
            room_id, UserID(profile.user_id)
        )
        if participant.can_publish and not allowed:
            log.info("%s may no longer publish in %s", profile.user_id, room_id)
        participant.set_can_publish(allowed)
        return allowed

    async def apply_to_room(self, room_id: RoomID) -> None:
        """Re-decide for everyone in the room's call (its state changed)."""
        for _, participant, profile in await self.conferences.in_room(room_id):
            await self.apply(room_id, participant, profile)
