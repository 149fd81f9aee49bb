"""The control side's handle on a dial-in call's media leg (:class:`~bridge.voip.leg.MediaLeg`),
which lives with its conference's media, in this process or in a media worker."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..media import MediaPlane
    from .signalling import Candidate, StreamMetadata


class LegLink:
    def __init__(self, media: MediaPlane, conference_id: str, participant_id: str) -> None:
        self.media = media
        self.conference_id = conference_id
        self.id = participant_id
        self.sends_video = False
        """Whether our last answer carries the speaker's video (told to the caller)."""

    async def accept_offer(self, sdp: str) -> str:
        """Apply the caller's (re-)offer; return our answer."""
        answer = await self.media.leg_offer(self.conference_id, self.id, sdp)
        self.sends_video = answer.sends_video
        return answer.sdp

    async def add_candidate(self, candidate: Candidate) -> None:
        """Raises ValueError for a candidate the media cannot use."""
        await self.media.leg_candidate(self.conference_id, self.id, candidate)

    async def apply_metadata(self, metadata: StreamMetadata) -> None:
        """Mute in the conference what the caller says is muted."""
        await self.media.leg_metadata(self.conference_id, self.id, metadata)

    async def close(self, reason: str) -> None:
        await self.media.leg_close(self.conference_id, self.id, reason)
