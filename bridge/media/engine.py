"""The media of one process: its SFU, the LiveKit sessions and dial-in legs of the
conferences it owns, and the commands the control side sends them.

In-process (``media.workers: 0``) the bridge holds one engine; otherwise each media worker
holds one and carries out the commands that arrive on its control channel.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Awaitable, Callable
import logging

from mautrix.types import RoomID, UserID

from sfu import SFU, Event, MediaSettings, ParticipantStateChanged, TrackKind

from ..conferences import Conferences, Profile, Via
from ..livekit.host import LiveKitHost
from ..voip.leg import MediaLeg
from ..voip.signalling import Candidate, StreamMetadata
from .plane import MediaFigures
from .roster import Presence

log = logging.getLogger("mau.media.engine")

PresenceSink = Callable[[Presence], None]
PublishCheck = Callable[[str, str], Awaitable[bool]]


class UnknownCommand(Exception):
    pass


class MediaEngine:
    def __init__(
        self,
        settings: MediaSettings,
        on_presence: PresenceSink,
        publish_check: PublishCheck,
        empty_grace_s: float,
        resume_grace_s: float,
    ) -> None:
        self.sfu = SFU(settings)
        self.conferences = Conferences(self.sfu)
        self.livekit = LiveKitHost(
            self.conferences, settings, self._may_publish, empty_grace_s, resume_grace_s
        )
        self._on_presence = on_presence
        self._publish_check = publish_check
        self._legs: dict[str, tuple[MediaLeg, Callable[[], None]]] = {}
        self.conferences.listen_all(self._forward_presence)

    async def _may_publish(self, room_id: RoomID, user_id: UserID, profile: Profile) -> bool:
        return profile.may_publish and await self._publish_check(room_id, user_id)

    def _forward_presence(self, event: Event) -> None:
        if not isinstance(event, ParticipantStateChanged):
            return
        profile = self.conferences.profile(event.conference_id, event.participant_id)
        if profile is not None:
            self._on_presence(
                Presence(
                    event.conference_id,
                    event.participant_id,
                    event.state,
                    profile,
                    event.reason,
                )
            )

    async def stop(self) -> None:
        await self.livekit.stop()
        await self.sfu.close()

    def figures(self) -> MediaFigures:
        sfu = self.sfu
        participants = [p for c in sfu.conferences for p in c.participants]
        tracks = [t for c in sfu.conferences for t in c.tracks]
        return MediaFigures(
            conferences=len(sfu.conferences),
            participants=len(participants),
            published_audio=sum(1 for t in tracks if t.kind == TrackKind.AUDIO),
            published_video=sum(1 for t in tracks if t.kind == TrackKind.VIDEO),
            subscriptions=sum(
                1 for p in participants for s in p.subscriptions if s.source is not None
            ),
            connecting=sfu.connecting_transports(),
            counters=sfu.media_counters(),
        )

    async def command(self, conference_id: str, name: str, args: dict[str, Any]) -> Any:
        """Carry out one of the ``_cmd_`` methods below on a conference."""
        handler = getattr(self, f"_cmd_{name}", None)
        if handler is None:
            raise UnknownCommand(name)
        return await handler(conference_id, **args)

    # ------------------------------------------------------------------ commands

    async def _cmd_remove(self, conference_id: str, participant_id: str, reason: str) -> None:
        conference = self.sfu.conference(conference_id)
        if conference is not None:
            await conference.remove(participant_id, reason)

    async def _cmd_end(self, conference_id: str, reason: str) -> int:
        conference = self.sfu.conference(conference_id)
        if conference is None:
            return 0
        participants = conference.participants
        for participant in participants:
            await conference.remove(participant.id, reason)
        return len(participants)

    async def _cmd_mute(
        self, conference_id: str, participant_id: str, kinds: list[str], hold: bool
    ) -> None:
        conference = self.sfu.conference(conference_id)
        participant = conference.participant(participant_id) if conference else None
        if participant is None:
            return
        muted = frozenset(TrackKind(kind) for kind in kinds)
        if hold:
            participant.hold_muted(muted)
        room = self.livekit.rooms.get(conference_id)
        for track in participant.published:
            if track.kind in muted:
                participant.set_muted(track.track_id, True)
                if room is not None:
                    room.request_mute(participant.id, track.track_id)

    async def _cmd_hold(self, conference_id: str, participant_id: str, kinds: list[str]) -> None:
        conference = self.sfu.conference(conference_id)
        participant = conference.participant(participant_id) if conference else None
        if participant is not None:
            participant.hold_muted(frozenset(TrackKind(kind) for kind in kinds))

    async def _cmd_set_can_publish(
        self, conference_id: str, participant_id: str, allowed: bool
    ) -> None:
        conference = self.sfu.conference(conference_id)
        participant = conference.participant(participant_id) if conference else None
        if participant is None:
            return
        if participant.can_publish and not allowed:
            log.info("%s may no longer publish in %s", participant_id, conference_id)
        participant.set_can_publish(allowed)

    async def _cmd_leg_open(
        self, conference_id: str, participant_id: str, profile: dict[str, Any]
    ) -> None:
        leg = MediaLeg(
            self.conferences,
            conference_id,
            participant_id,
            Profile(**{**profile, "via": Via(profile["via"])}),
        )
        stop_listening = self.conferences.listen(conference_id, leg.on_event)
        self._legs[participant_id] = (leg, stop_listening)

    async def _cmd_leg_offer(
        self, conference_id: str, participant_id: str, sdp: str
    ) -> dict[str, Any]:
        leg, _ = self._legs[participant_id]
        answer = await leg.accept_offer(sdp)
        return {"sdp": answer, "sends_video": leg.sends_video}

    async def _cmd_leg_candidate(
        self,
        conference_id: str,
        participant_id: str,
        candidate: str,
        sdp_mid: str | None,
        sdp_mline_index: int | None,
    ) -> str | None:
        """An unusable candidate: why, for the caller's log."""
        leg, _ = self._legs[participant_id]
        try:
            await leg.add_candidate(Candidate(candidate, sdp_mid, sdp_mline_index))
        except (ValueError, IndexError) as e:
            return str(e) or type(e).__name__
        return None

    async def _cmd_leg_metadata(
        self, conference_id: str, participant_id: str, audio_muted: bool, video_muted: bool
    ) -> None:
        leg, _ = self._legs[participant_id]
        leg.apply_metadata(StreamMetadata(audio_muted, video_muted))

    async def _cmd_leg_close(self, conference_id: str, participant_id: str, reason: str) -> None:
        entry = self._legs.pop(participant_id, None)
        if entry is None:
            return
        leg, stop_listening = entry
        stop_listening()
        await leg.close(reason)
        await self.conferences.close_if_empty(conference_id)
