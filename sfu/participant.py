"""A conference participant: its transports, the tracks it publishes and what it receives."""

from __future__ import annotations

from typing import TYPE_CHECKING
import itertools

from aiortc import MediaStreamTrack, RTCRtpTransceiver

from . import aiortc_seams as seams
from .events import (
    NegotiationNeeded,
    ParticipantState,
    PublishPermissionChanged,
    TrackInfo,
    TrackKind,
)
from .subscription import Subscription
from .track import AUDIO_LEVEL_URI, PublishedTrack
from .transport import Transport, TransportRole

if TYPE_CHECKING:
    from .conference import Conference

_transport_ids = itertools.count(1)


class Participant:
    """One endpoint in a conference, identified by an opaque id chosen by the adapter."""

    def __init__(self, participant_id: str, conference: Conference, auto_subscribe: bool):
        self.id = participant_id
        self.auto_subscribe = auto_subscribe
        """Subscribe to every track published by others (the default for LiveKit clients)."""
        self.state = ParticipantState.JOINED
        self.can_publish = True
        """Set by the adapter from its authorisation (:meth:`set_can_publish`)."""
        self.held_muted: frozenset[TrackKind] = frozenset()
        """Kinds of its tracks kept muted whatever it asks (:meth:`hold_muted`)."""
        self._conference = conference
        self._transports: dict[str, Transport] = {}
        self._published: dict[str, PublishedTrack] = {}
        self._subscriptions: list[Subscription] = []

    @property
    def transports(self) -> list[Transport]:
        return list(self._transports.values())

    @property
    def published(self) -> list[TrackInfo]:
        return [track.info for track in self._published.values()]

    @property
    def subscriptions(self) -> list[Subscription]:
        return list(self._subscriptions)

    def add_transport(
        self, role: TransportRole = TransportRole.SINGLE, transport_id: str | None = None
    ) -> Transport:
        transport_id = transport_id or f"{self.id}#{next(_transport_ids)}"
        if transport_id in self._transports:
            raise ValueError(f"transport {transport_id} exists")
        transport = Transport(
            transport_id, role, self, self._conference.settings, self._conference.udp_mux
        )
        self._transports[transport_id] = transport
        if self.auto_subscribe and role is not TransportRole.PUBLISHER:
            for info in self._conference.tracks:
                if info.participant_id != self.id:
                    self.subscribe(info.track_id, transport_id)
        return transport

    @property
    def can_receive(self) -> bool:
        return any(t.role is not TransportRole.PUBLISHER for t in self._transports.values())

    def transport(self, transport_id: str) -> Transport:
        return self._transports[transport_id]

    # ------------------------------------------------------------------ receiving

    def subscribe(self, track_id: str, transport_id: str | None = None) -> Subscription:
        """Receive ``track_id``; idempotent. May emit :class:`NegotiationNeeded`."""
        existing = self.subscription_for(track_id)
        if existing is not None:
            return existing
        source = self._conference.published_track(track_id)
        subscription = self.add_slot(source.info.kind, transport_id)
        subscription.set_msid(source.info.participant_id, track_id)
        self._renegotiate(subscription.transport_id)
        subscription.switch(source)
        return subscription

    def add_slot(self, kind: TrackKind, transport_id: str | None = None) -> Subscription:
        """An outgoing stream with no source yet, reusing a free one of this kind if any.

        Drive it with :meth:`Subscription.switch` (e.g. a legacy VoIP leg's video, switched to
        the active speaker); seq/ts/PictureID stay continuous across switches.
        """
        transport = self._sending_transport(transport_id)
        subscription = transport.free_subscription(kind)
        if subscription is None:
            subscription = transport.add_subscription(self.id, kind)
            self._subscriptions.append(subscription)
            self._renegotiate(transport.id)
        return subscription

    def add_local_track(
        self, track: MediaStreamTrack, stream_id: str, transport_id: str | None = None
    ) -> None:
        """Send a track produced in this process rather than forwarded, such as the
        conference's audio mix for a leg that receives a single stream
        (:meth:`sfu.AudioMixer.listen`). aiortc encodes it for this participant alone."""
        transport = self._sending_transport(transport_id)
        transport.add_local_track(track, stream_id)
        self._renegotiate(transport.id)

    def unsubscribe(self, track_id: str) -> None:
        subscription = self.subscription_for(track_id)
        if subscription is not None:
            self._transports[subscription.transport_id].remove_subscription(subscription)

    def subscription_for(self, track_id: str) -> Subscription | None:
        for subscription in self._subscriptions:
            if subscription.source is not None and subscription.source.info.track_id == track_id:
                return subscription
        return None

    def _sending_transport(self, transport_id: str | None) -> Transport:
        if transport_id is not None:
            return self._transports[transport_id]
        for transport in self._transports.values():
            if transport.role is not TransportRole.PUBLISHER:
                return transport
        raise LookupError(f"participant {self.id} has no transport to receive on")

    def viewing_changed(self) -> None:
        """The participant changed what it views (tile sizes, qualities, pauses): its layers
        are allocated again now."""
        self._conference.adapt_now()

    def _renegotiate(self, transport_id: str) -> None:
        self._conference._emit(NegotiationNeeded(self._conference.id, self.id, transport_id))

    # ------------------------------------------------------------------ publishing

    def set_can_publish(self, allowed: bool) -> None:
        """Allow or forbid publishing. Forbidden, the participant's tracks are unpublished at
        once and what it sends is dropped; sections it offers are refused until allowed again
        (then its next offer publishes)."""
        if allowed == self.can_publish:
            return
        self.can_publish = allowed
        if not allowed:
            for transport in self._transports.values():
                transport.stop_receiving()
        conference = self._conference
        conference._emit(PublishPermissionChanged(conference.id, self.id, allowed))

    def set_muted(self, track_id: str, muted: bool) -> None:
        """Mute or unmute one of its tracks; unknown (e.g. just unpublished) tracks are
        ignored, and so is unmuting a track of a held kind."""
        track = self._published.get(track_id)
        if track is not None and not muted and track.info.kind in self.held_muted:
            return
        if track is not None and track.muted != muted:
            track.set_muted(muted)
            self._conference._track_muted(track)

    def set_screen_share(self, track_id: str) -> None:
        """Mark one of its tracks as a screen share: bandwidth adaptation serves it before
        cameras. Only the adapter knows a track's source."""
        track = self._published.get(track_id)
        if track is not None:
            track.screen_share = True

    def hold_muted(self, kinds: frozenset[TrackKind]) -> None:
        """Mute its tracks of ``kinds`` now and keep them muted, those it publishes later
        too, until released with an empty set (a moderator's mute in a moderated call)."""
        self.held_muted = kinds
        for track in list(self._published.values()):
            if track.info.kind in kinds:
                self.set_muted(track.info.track_id, True)

    def _publish_budget(self) -> int:
        if not self.can_publish:
            return 0
        return max(0, self._conference.settings.max_tracks_per_participant - len(self._published))

    def _publish_incoming(
        self, transport: Transport, transceiver: RTCRtpTransceiver, track_id: str | None
    ) -> PublishedTrack | None:
        codecs = seams.negotiated_codecs(transceiver)
        media = [c for c in codecs if not c.mimeType.lower().endswith("/rtx")]
        if not media:
            return None
        codec = media[0]
        rtx = {
            c.payloadType: int(str(c.parameters["apt"]))
            for c in codecs
            if c.mimeType.lower().endswith("/rtx")
            and "apt" in c.parameters
            and c.payloadType is not None
        }
        info = TrackInfo(
            track_id=track_id or f"{self.id}/{transceiver.mid}",
            participant_id=self.id,
            kind=TrackKind(transceiver.kind),
            codec=codec.mimeType,
            mid=transceiver.mid,
            muted=TrackKind(transceiver.kind) in self.held_muted,
        )
        conference = self._conference
        track = PublishedTrack(
            info,
            transceiver.receiver,
            clock_rate=codec.clockRate,
            rtx_payload_types=rtx,
            audio_level_id=(
                seams.negotiated_extension_id(transceiver, AUDIO_LEVEL_URI)
                if transceiver.kind == "audio"
                else 0
            ),
            history_size=(
                conference.settings.audio_history_size
                if transceiver.kind == "audio"
                else conference.settings.history_size
            ),
            keyframe_interval=conference.settings.keyframe_request_interval,
            on_keyframe_request=conference._keyframe_requested,
            on_audio_level=conference._audio_level,
            simulcast=transport.simulcast_offers.get(transceiver.mid or ""),
        )
        self._published[info.track_id] = track
        conference._add_track(track)
        return track

    def _unpublish_incoming(self, track: PublishedTrack) -> None:
        self._published.pop(track.info.track_id, None)
        self._conference._remove_track(track)

    # ------------------------------------------------------------------ lifecycle

    def _transport_state_changed(self, transport: Transport, state: str) -> None:
        if state == "connected" and self.state is ParticipantState.JOINED:
            self._conference._participant_state(self, ParticipantState.CONNECTED)
        elif state in ("failed", "closed") and self.state is not ParticipantState.DISCONNECTED:
            self._conference._schedule_removal(self.id, f"transport {state}")

    async def _close(self) -> None:
        self.state = ParticipantState.DISCONNECTED
        # Counted before anything is awaited: the conference no longer lists this participant,
        # so what it counted must be in the totals at once (they never go backwards).
        retired = self._conference.retired
        for transport in self._transports.values():
            retired.add_transport(transport.stats)
        for subscription in self._subscriptions:
            retired.add_subscription(subscription)
        for transport in self._transports.values():
            await transport.close()  # never raises: it releases what it can
        self._transports.clear()
        self._subscriptions.clear()
        self._published.clear()
