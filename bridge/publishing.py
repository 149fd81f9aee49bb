"""Keeps every participant's right to publish in line with its room.

The decision is :meth:`RoomAccess.may_publish` (room state and ``bridge.permissions``); this
applies it to the media, which unpublishes at once whoever lost the right, however they joined
(Element Call, dial-in). It runs when someone joins, whenever a participant asks to publish
(the media asks :meth:`may_publish`), and after every change of a room's power levels.
"""

from __future__ import annotations

from mautrix.types import RoomID, UserID

from .conferences import Profile
from .focus.access import RoomAccess
from .media import MediaPlane


class PublishRights:
    def __init__(self, access: RoomAccess, media: MediaPlane) -> None:
        self.access = access
        self.media = media
        media.publish_check = self.may_publish

    async def may_publish(self, room_id: RoomID, user_id: UserID) -> bool:
        return await self.access.may_publish(room_id, user_id)

    async def apply(
        self, room_id: RoomID, conference_id: str, participant_id: str, profile: Profile
    ) -> bool:
        """Decide now whether the participant may publish, tell the media, and return it."""
        allowed = profile.may_publish and await self.access.may_publish(
            room_id, UserID(profile.user_id)
        )
        await self.media.set_can_publish(conference_id, participant_id, allowed)
        return allowed

    async def apply_to_room(self, room_id: RoomID) -> None:
        """Re-decide for everyone in the room's call (its state changed)."""
        for conference_id, participant_id, profile in await self.media.roster.in_room(room_id):
            await self.apply(room_id, conference_id, participant_id, profile)
