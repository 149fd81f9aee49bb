"""What a media worker or node tells the bridge over its control channel: presence, the
conferences that closed, and the questions whether a participant may publish."""

from __future__ import annotations

from .channel import Channel, ChannelClosed
from .roster import Presence


class ToBridge:
    def __init__(self) -> None:
        self.channel: Channel | None = None
        """Set once the bridge is connected; until then there is nobody to tell."""

    def presence(self, presence: Presence) -> None:
        if self.channel is not None:
            self.channel.notify("presence", presence=presence.to_wire())

    def closed(self, conference_id: str) -> None:
        if self.channel is not None:
            self.channel.notify("closed", conference_id=conference_id)

    async def may_publish(self, room_id: str, user_id: str) -> bool:
        """The bridge decides from the room's state; without an answer, nobody publishes."""
        if self.channel is None:
            return False
        try:
            answer = await self.channel.request("may_publish", room_id=room_id, user_id=user_id)
        except ChannelClosed:
            return False
        return bool(answer)
