"""A conference: participants, the tracks they publish, active speakers, and events out."""

from __future__ import annotations

import asyncio
import logging
import time

from .adaptation import Adaptation
from .config import MediaSettings
from .events import (
    Event,
    EventHandler,
    KeyframeRequested,
    ParticipantState,
    ParticipantStateChanged,
    SpeakersChanged,
    TrackInfo,
    TrackKind,
    TrackMuted,
    TrackPublished,
    TrackUnpublished,
)
from .mixer import AudioMixer
from .participant import Participant
from .speaker import SpeakerDetector
from .stats import MediaCounters
from .track import PublishedTrack
from .udp_mux import UdpMux

logger = logging.getLogger(__name__)


class Conference:
    """Routes media between participants; created by :meth:`sfu.SFU.create_conference`."""

    def __init__(
        self,
        conference_id: str,
        settings: MediaSettings,
        on_event: EventHandler | None,
        retired: MediaCounters | None = None,
        udp_mux: UdpMux | None = None,
    ) -> None:
        """``retired`` receives what tracks and participants counted when they go."""
        self.id = conference_id
        self.retired = retired if retired is not None else MediaCounters()
        self.settings = settings
        self.udp_mux = udp_mux
        self._on_event = on_event
        self._participants: dict[str, Participant] = {}
        self._tracks: dict[str, PublishedTrack] = {}
        self._speakers = SpeakerDetector()
        self._removals: set[asyncio.Task[None]] = set()
        self._mixer: AudioMixer | None = None
        self._closed = False
        self._adaptation = Adaptation(conference_id, settings.max_publish_bitrate)
        loop = asyncio.get_running_loop()
        self._speaker_task = loop.create_task(self._speaker_loop())
        self._adaptation_task = loop.create_task(self._adaptation_loop())

    @property
    def participants(self) -> list[Participant]:
        return list(self._participants.values())

    @property
    def tracks(self) -> list[TrackInfo]:
        return [track.info for track in self._tracks.values()]

    @property
    def dominant_speaker(self) -> str | None:
        return self._speakers.dominant

    def audio_mixer(self) -> AudioMixer:
        """The conference's audio mix, made on first use (decoding starts with a listener)."""
        if self._mixer is None:
            self._mixer = AudioMixer()
            for track in self._tracks.values():
                if track.info.kind == TrackKind.AUDIO:
                    self._mixer.add_source(track)
        return self._mixer

    def participant(self, participant_id: str) -> Participant | None:
        return self._participants.get(participant_id)

    def published_track(self, track_id: str) -> PublishedTrack:
        try:
            return self._tracks[track_id]
        except KeyError:
            raise LookupError(f"no track {track_id} in conference {self.id}") from None

    def join(self, participant_id: str, auto_subscribe: bool = True) -> Participant:
        """Add a participant; give it transports with :meth:`Participant.add_transport`.

        With ``auto_subscribe`` it receives every other participant's tracks, from the moment
        it has a transport to receive on.
        """
        if self._closed:
            raise RuntimeError(f"conference {self.id} is closed")
        if participant_id in self._participants:
            raise ValueError(f"participant {participant_id} already joined")
        participant = Participant(participant_id, self, auto_subscribe)
        self._participants[participant_id] = participant
        self._emit(ParticipantStateChanged(self.id, participant_id, ParticipantState.JOINED))
        return participant

    async def remove(self, participant_id: str, reason: str = "left") -> None:
        """A participant leaves (or is removed): its tracks are unpublished, transports closed."""
        participant = self._participants.pop(participant_id, None)
        if participant is None:
            return
        try:
            if self._mixer is not None:
                self._mixer.remove_listener(participant_id)
            await participant._close()
        finally:
            # Whatever failed above, the others must see the participant go.
            self._speakers.remove(participant_id)
            self._emit(
                ParticipantStateChanged(
                    self.id, participant_id, ParticipantState.DISCONNECTED, reason
                )
            )

    async def close(self) -> None:
        self._closed = True
        self._speaker_task.cancel()
        self._adaptation_task.cancel()
        if self._mixer is not None:
            self._mixer.close()
        for task in list(self._removals):
            task.cancel()
        for participant_id in list(self._participants):
            await self.remove(participant_id, "conference closed")

    # ------------------------------------------------------------------ from participants

    def _emit(self, event: Event) -> None:
        if self._on_event is None:
            return
        try:
            self._on_event(event)
        except Exception:
            logger.exception("event handler failed on %r", event)

    def _participant_state(self, participant: Participant, state: ParticipantState) -> None:
        participant.state = state
        self._emit(ParticipantStateChanged(self.id, participant.id, state))

    def _schedule_removal(self, participant_id: str, reason: str) -> None:
        if self._closed:
            return
        task = asyncio.get_running_loop().create_task(self.remove(participant_id, reason))
        self._removals.add(task)
        task.add_done_callback(self._removals.discard)

    def _add_track(self, track: PublishedTrack) -> None:
        track_id = track.info.track_id
        if track_id in self._tracks:
            raise ValueError(f"track {track_id} already published")
        self._tracks[track_id] = track
        if self._mixer is not None and track.info.kind == TrackKind.AUDIO:
            self._mixer.add_source(track)
        self._emit(TrackPublished(self.id, track.info))
        for participant in self._participants.values():
            if (
                participant.auto_subscribe
                and participant.can_receive
                and participant.id != track.info.participant_id
            ):
                participant.subscribe(track_id)

    def _remove_track(self, track: PublishedTrack) -> None:
        if self._tracks.pop(track.info.track_id, None) is None:
            return
        if self._mixer is not None:
            self._mixer.remove_source(track)
        track.close()
        self.retired.add_track(track)
        self._emit(TrackUnpublished(self.id, track.info))

    def _track_muted(self, track: PublishedTrack) -> None:
        self._emit(TrackMuted(self.id, track.info))

    def _keyframe_requested(self, track_id: str, reason: str) -> None:
        self._emit(KeyframeRequested(self.id, track_id, reason))

    def _audio_level(self, participant_id: str, level: int, now: float) -> None:
        self._speakers.observe(participant_id, level, now)

    async def _speaker_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.speaker_update_interval)
            update = self._speakers.update(time.monotonic())
            if update is not None:
                speakers, dominant_changed = update
                self._emit(
                    SpeakersChanged(
                        self.id, tuple(speakers), self._speakers.dominant, dominant_changed
                    )
                )

    async def _adaptation_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.adaptation_interval)
            self.adapt_now()

    def adapt_now(self) -> None:
        """One round of bandwidth allocation and dynacast: every ``adaptation_interval``, and
        at once when a subscriber changes what it views, so that a tile enlarged gets its
        layer (and a publisher re-enables it) without waiting for the next round."""
        try:
            events = self._adaptation.tick(
                self.participants,
                list(self._tracks.values()),
                self._speakers.dominant,
                time.monotonic(),
            )
        except Exception:
            # A fault here must not stop forwarding, nor the next round.
            logger.exception("bandwidth adaptation failed in conference %s", self.id)
            return
        for event in events:
            self._emit(event)
