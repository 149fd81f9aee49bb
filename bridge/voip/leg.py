"""The media side of one dial-in call: a conference participant shaped for a 1:1 client.

It publishes what the caller sends, like any participant. A 1:1 client plays one remote
stream, so it receives, on the sections of its own offer, the conference's audio mix without
its own voice (:class:`sfu.AudioMixer`) and one video slot switched to the active speaker
(another participant's camera; the SFU asks for a key frame on each switch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
import logging

from sfu import (
    Event,
    SpeakersChanged,
    Subscription,
    TrackInfo,
    TrackKind,
    TrackPublished,
    TrackUnpublished,
    TransportRole,
)

from .signalling import Candidate, StreamMetadata

if TYPE_CHECKING:
    from ..conferences import Conferences, Profile

log = logging.getLogger("mau.voip.leg")

STREAM_ID = "conference"
DIAL_IN_VIDEO_SIZE = (640, 360)
"""The tile a 1:1 client is sent video for: of a simulcast camera (180p/360p/720p from
Element Call) the middle layer, sharp in a call window without the top layer's bandwidth."""
"""The ``a=msid`` stream of what the caller receives, named in our ``sdp_stream_metadata``."""


def offered_kinds(sdp: str) -> set[str]:
    return {line[2:].split(" ", 1)[0] for line in sdp.splitlines() if line.startswith("m=")}


class MediaLeg:
    def __init__(
        self, conferences: Conferences, conference_id: str, participant_id: str, profile: Profile
    ) -> None:
        """Join the conference with a profile, so that the other adapters show the caller
        and call history counts them; not subscribed to every track, which a 1:1 client could
        not tell apart."""
        self.conference = conferences.get_or_create(conference_id)
        self.id = participant_id
        self.participant = conferences.join(
            conference_id, participant_id, profile, auto_subscribe=False
        )
        self.transport = self.participant.add_transport(TransportRole.SINGLE)
        self._hears_mix = False
        self._video: Subscription | None = None

    @property
    def sends_video(self) -> bool:
        return self._video is not None

    async def accept_offer(self, sdp: str) -> str:
        """Apply the caller's (re-)offer; return our answer. New sections get our streams."""
        kinds = offered_kinds(sdp)
        if "audio" in kinds and not self._hears_mix:
            track = self.conference.audio_mixer().listen(self.id)
            self.participant.add_local_track(track, STREAM_ID, self.transport.id)
            self._hears_mix = True
        if "video" in kinds and self._video is None:
            self._video = self.participant.add_slot(TrackKind.VIDEO, self.transport.id)
            self._video.set_msid(STREAM_ID, "speaker")
            self._video.prefer_size(*DIAL_IN_VIDEO_SIZE)
        answer = await self.transport.accept_offer(sdp)
        self._show(self.conference.dominant_speaker)
        return answer

    async def add_candidate(self, candidate: Candidate) -> None:
        if not candidate.candidate:
            await self.transport.add_remote_candidate(None)
            return
        await self.transport.add_remote_candidate(
            candidate.candidate, candidate.sdp_mid, candidate.sdp_mline_index or 0
        )

    def apply_metadata(self, metadata: StreamMetadata) -> None:
        """Mute in the conference what the caller says is muted."""
        for track in self.participant.published:
            muted = metadata.audio_muted if track.kind == TrackKind.AUDIO else metadata.video_muted
            self.participant.set_muted(track.track_id, muted)

    def on_event(self, event: Event) -> None:
        """Conference events: keep the video slot on the active speaker."""
        if self._video is None:
            return
        if isinstance(event, SpeakersChanged) and event.dominant_changed:
            self._show(event.dominant)
        elif isinstance(event, TrackPublished) and self._video.source is None:
            self._show(self.conference.dominant_speaker)
        elif (
            isinstance(event, TrackUnpublished)
            and self._video.source is not None
            and self._video.source.info.track_id == event.track.track_id
        ):
            self._video.switch(None)
            self._show(self.conference.dominant_speaker)

    def _show(self, speaker: str | None) -> None:
        """Switch the video slot to ``speaker``'s camera; never to the caller's own. Without a
        speaker's camera, keep what is shown, or show anyone's."""
        if self._video is None:
            return
        videos = [
            track
            for track in self.conference.tracks
            if track.kind == TrackKind.VIDEO and track.participant_id != self.id
        ]
        chosen = next((t for t in videos if t.participant_id == speaker), None)  # never self
        if chosen is None and self._video.source is None and videos:
            chosen = videos[0]
        if chosen is not None:
            self._switch(chosen)

    def _switch(self, track: TrackInfo) -> None:
        assert self._video is not None
        source = self.conference.published_track(track.track_id)
        if self._video.source is not source:
            log.debug("%s now sees %s", self.id, track.participant_id)
            self._video.switch(source)

    async def close(self, reason: str) -> None:
        await self.conference.remove(self.id, reason)
