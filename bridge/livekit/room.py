"""A LiveKit room: the LiveKit view of one SFU conference (participants, their tracks, the
versions clients use to order updates), and the fan-out of SFU events to its sessions.

Participants that joined the conference another way (legacy VoIP dial-in) appear here too,
from their :class:`~bridge.conferences.Profile`, so LiveKit clients see and receive them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol
from collections.abc import Callable
from dataclasses import dataclass, field
import logging
import time

from livekit.protocol import models, rtc

from sfu import (
    ConnectionQualityChanged,
    Event,
    NegotiationNeeded,
    ParticipantState,
    ParticipantStateChanged,
    PublishPermissionChanged,
    SpeakersChanged,
    StreamStateChanged,
    SubscribedLayersChanged,
    TrackInfo,
    TrackKind,
    TrackMuted,
    TrackPublished,
    TrackUnpublished,
)

from ..conferences import Via
from .ids import new_sid

if TYPE_CHECKING:
    from ..conferences import Conferences

log = logging.getLogger("mau.livekit.room")

PARTICIPANT_STATE = models.ParticipantInfo.State


class Session(Protocol):
    """What the room needs of a client's signalling session."""

    def post(self, response: rtc.SignalResponse) -> None: ...

    def negotiation_needed(self, transport_id: str) -> None: ...

    def published(self, track: TrackInfo) -> models.TrackInfo | None:
        """The LiveKit description of one of its tracks that the SFU now receives."""

    def unpublished(self, track_id: str) -> None:
        """One of its tracks is no longer received (it stopped, or lost the right to)."""

    def disconnected(self, reason: str) -> None: ...


@dataclass
class RoomParticipant:
    sid: str
    identity: str
    name: str
    permission: models.ParticipantPermission
    kind: models.ParticipantInfo.Kind = models.ParticipantInfo.Kind.STANDARD
    state: models.ParticipantInfo.State = PARTICIPANT_STATE.JOINING
    metadata: str = ""
    joined_at: float = field(default_factory=time.time)
    tracks: dict[str, models.TrackInfo] = field(default_factory=dict)
    version: int = 1

    def changed(self) -> None:
        """Clients ignore an update whose version is not newer than what they have."""
        self.version += 1

    def info(self) -> models.ParticipantInfo:
        return models.ParticipantInfo(
            sid=self.sid,
            identity=self.identity,
            name=self.name,
            state=self.state,
            tracks=list(self.tracks.values()),
            metadata=self.metadata,
            joined_at=int(self.joined_at),
            joined_at_ms=int(self.joined_at * 1000),
            version=self.version,
            permission=self.permission,
            is_publisher=bool(self.tracks),
            kind=self.kind,
        )


def describe_foreign_track(track: TrackInfo) -> models.TrackInfo:
    """A track published by a non-LiveKit participant, as LiveKit clients expect it."""
    video = track.kind is TrackKind.VIDEO
    return models.TrackInfo(
        sid=track.track_id,
        type=models.TrackType.VIDEO if video else models.TrackType.AUDIO,
        source=models.TrackSource.CAMERA if video else models.TrackSource.MICROPHONE,
        name="camera" if video else "microphone",
        mime_type=track.codec,
        mid=track.mid or "",
        muted=track.muted,
        codecs=[models.SimulcastCodecInfo(mime_type=track.codec, mid=track.mid or "")],
    )


class LiveKitRoom:
    def __init__(
        self,
        name: str,
        conference_id: str,
        conferences: Conferences,
        on_empty: Callable[[LiveKitRoom], None],
    ) -> None:
        self.sid = new_sid("RM_")
        self.name = name
        self.conference_id = conference_id
        self.created_at = time.time()
        self.participants: dict[str, RoomParticipant] = {}
        self.sessions: dict[str, Session] = {}
        self._conferences = conferences
        self._on_empty = on_empty
        self._stop_listening = conferences.listen(conference_id, self._on_event)
        self._adopt_existing()

    def info(self) -> models.Room:
        return models.Room(
            sid=self.sid,
            name=self.name,
            creation_time=int(self.created_at),
            creation_time_ms=int(self.created_at * 1000),
            num_participants=len(self.participants),
            num_publishers=sum(1 for p in self.participants.values() if p.tracks),
            enabled_codecs=[models.Codec(mime="video/VP8"), models.Codec(mime="audio/opus")],
        )

    def add(self, participant: RoomParticipant, session: Session) -> None:
        self.participants[participant.sid] = participant
        self.sessions[participant.sid] = session

    def others(self, sid: str) -> list[models.ParticipantInfo]:
        return [p.info() for p in self.participants.values() if p.sid != sid]

    def participant_changed(self, participant: RoomParticipant) -> None:
        participant.changed()
        self.broadcast(
            rtc.SignalResponse(update=rtc.ParticipantUpdate(participants=[participant.info()])),
            exclude=participant.sid,
        )

    def broadcast(self, response: rtc.SignalResponse, exclude: str | None = None) -> None:
        for sid, session in list(self.sessions.items()):
            if sid != exclude:
                session.post(response)

    def request_mute(self, participant_id: str, track_id: str) -> None:
        """Tell a client the server muted one of its tracks, as a LiveKit server does for a
        moderator: livekit-client then mutes the track itself and shows it muted."""
        session = self.sessions.get(participant_id)
        if session is not None:
            session.post(rtc.SignalResponse(mute=rtc.MuteTrackRequest(sid=track_id, muted=True)))

    def close(self) -> None:
        self._stop_listening()

    # ------------------------------------------------------------------ SFU events

    def _on_event(self, event: Event) -> None:
        if isinstance(event, TrackPublished):
            self._track_published(event.track)
        elif isinstance(event, TrackUnpublished):
            self._track_unpublished(event.track)
        elif isinstance(event, TrackMuted):
            self._track_muted(event.track)
        elif isinstance(event, SpeakersChanged):
            speakers = [
                models.SpeakerInfo(sid=s.participant_id, level=s.level, active=s.active)
                for s in event.speakers
            ]
            self.broadcast(
                rtc.SignalResponse(speakers_changed=rtc.SpeakersChanged(speakers=speakers))
            )
        elif isinstance(event, NegotiationNeeded):
            session = self.sessions.get(event.participant_id)
            if session is not None:
                session.negotiation_needed(event.transport_id)
        elif isinstance(event, ParticipantStateChanged):
            self._participant_state(event)
        elif isinstance(event, PublishPermissionChanged):
            self._permission_changed(event)
        elif isinstance(event, StreamStateChanged):
            self._stream_state(event)
        elif isinstance(event, SubscribedLayersChanged):
            self._subscribed_layers(event)
        elif isinstance(event, ConnectionQualityChanged):
            updates = [
                rtc.ConnectionQualityInfo(participant_sid=sid, quality=quality.name)
                for sid, quality in event.qualities
                if sid in self.participants
            ]
            if updates:
                self.broadcast(
                    rtc.SignalResponse(
                        connection_quality=rtc.ConnectionQualityUpdate(updates=updates)
                    )
                )

    def _adopt_existing(self) -> None:
        """Show participants already in the conference that came another way."""
        conference = self._conferences.sfu.conference(self.conference_id)
        if conference is None:
            return
        for sfu_participant in conference.participants:
            foreign = self._adopt(sfu_participant.id)
            if foreign is not None:
                for track in sfu_participant.published:
                    foreign.tracks[track.track_id] = describe_foreign_track(track)

    def _adopt(self, participant_id: str) -> RoomParticipant | None:
        """A participant that joined another way, as LiveKit clients see it. LiveKit clients
        of this room are added by their session instead (an early SFU event about one must not
        announce it as a foreign participant)."""
        profile = self._conferences.profile(self.conference_id, participant_id)
        if profile is None or profile.via is Via.MATRIXRTC or participant_id in self.participants:
            return self.participants.get(participant_id)
        participant = RoomParticipant(
            sid=participant_id,
            identity=profile.identity or profile.user_id,
            name=profile.display_name or profile.user_id,
            permission=models.ParticipantPermission(can_publish=True, can_subscribe=True),
            kind=models.ParticipantInfo.Kind.SIP,
            state=PARTICIPANT_STATE.ACTIVE,
        )
        self.participants[participant_id] = participant
        return participant

    def _participant_state(self, event: ParticipantStateChanged) -> None:
        if event.state is ParticipantState.DISCONNECTED:
            participant = self.participants.pop(event.participant_id, None)
            session = self.sessions.pop(event.participant_id, None)
            if session is not None:
                session.disconnected(event.reason)
            if participant is not None:
                participant.state = PARTICIPANT_STATE.DISCONNECTED
                self.participant_changed(participant)
            if not self.sessions:
                self._on_empty(self)
            return
        participant = self.participants.get(event.participant_id) or self._adopt(
            event.participant_id
        )
        if participant is None:
            return
        if event.state is ParticipantState.CONNECTED:
            participant.state = PARTICIPANT_STATE.ACTIVE
        self.participant_changed(participant)

    def _permission_changed(self, event: PublishPermissionChanged) -> None:
        """Everyone, the participant too, learns what it may do now (livekit-client keeps the
        local participant's permissions from these updates)."""
        participant = self.participants.get(event.participant_id)
        if participant is None or participant.permission.can_publish == event.can_publish:
            return
        participant.permission.can_publish = event.can_publish
        participant.permission.can_publish_data = event.can_publish
        participant.changed()
        self.broadcast(
            rtc.SignalResponse(update=rtc.ParticipantUpdate(participants=[participant.info()]))
        )

    def _track_published(self, track: TrackInfo) -> None:
        participant = self.participants.get(track.participant_id) or self._adopt(
            track.participant_id
        )
        if participant is None:
            return
        session = self.sessions.get(participant.sid)
        info = session.published(track) if session else describe_foreign_track(track)
        if info is None:
            log.debug("Track %s has no LiveKit description; not announced", track.track_id)
            return
        participant.tracks[info.sid] = info
        self.participant_changed(participant)

    def _track_unpublished(self, track: TrackInfo) -> None:
        participant = self.participants.get(track.participant_id)
        if participant is None or participant.tracks.pop(track.track_id, None) is None:
            return
        session = self.sessions.get(participant.sid)
        if session is not None:
            session.unpublished(track.track_id)
            session.post(
                rtc.SignalResponse(
                    track_unpublished=rtc.TrackUnpublishedResponse(track_sid=track.track_id)
                )
            )
        self.participant_changed(participant)

    def _track_muted(self, track: TrackInfo) -> None:
        participant = self.participants.get(track.participant_id)
        info = participant.tracks.get(track.track_id) if participant else None
        if participant is None or info is None:
            return
        info.muted = track.muted
        self.participant_changed(participant)

    def _stream_state(self, event: StreamStateChanged) -> None:
        """The subscriber's client shows a paused video as paused rather than frozen."""
        session = self.sessions.get(event.participant_id)
        publisher = next(
            (p for p in self.participants.values() if event.track_id in p.tracks), None
        )
        if session is None or publisher is None:
            return
        state = rtc.StreamState.PAUSED if event.paused else rtc.StreamState.ACTIVE
        info = rtc.StreamStateInfo(
            participant_sid=publisher.sid, track_sid=event.track_id, state=state
        )
        session.post(
            rtc.SignalResponse(stream_state_update=rtc.StreamStateUpdate(stream_states=[info]))
        )

    def _subscribed_layers(self, event: SubscribedLayersChanged) -> None:
        """Dynacast: livekit-client turns off the encodings of the qualities not enabled (it
        reads the per-codec list, matched to its codec by name, e.g. ``vp8``)."""
        session = self.sessions.get(event.participant_id)
        participant = self.participants.get(event.participant_id)
        info = participant.tracks.get(event.track_id) if participant is not None else None
        if session is None or info is None:
            return
        qualities = [
            rtc.SubscribedQuality(quality=layer.quality, enabled=enabled)
            for layer, enabled in zip(info.layers, event.enabled, strict=False)
        ]
        codec = info.mime_type.partition("/")[2].lower()
        session.post(
            rtc.SignalResponse(
                subscribed_quality_update=rtc.SubscribedQualityUpdate(
                    track_sid=event.track_id,
                    subscribed_qualities=qualities,
                    subscribed_codecs=[rtc.SubscribedCodec(codec=codec, qualities=qualities)],
                )
            )
        )
