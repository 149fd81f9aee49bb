"""The SFU's outward interface types: track descriptions and events.

Kept tiny and free of aiortc types so that signalling adapters (LiveKit, Matrix VoIP) depend on
nothing else (the idea of Galene's ``conn`` package).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
import enum

from .quality import ConnectionQuality
from .speaker import SpeakerLevel


class TrackKind(enum.StrEnum):
    AUDIO = "audio"
    VIDEO = "video"


class ParticipantState(enum.StrEnum):
    JOINED = "joined"
    CONNECTED = "connected"
    """At least one transport is connected."""
    DISCONNECTED = "disconnected"
    """Left, or removed after its transport failed."""


@dataclass(frozen=True)
class TrackInfo:
    track_id: str
    """Chosen by the adapter (e.g. LiveKit's ``TR_...``), unique within the conference."""
    participant_id: str
    kind: TrackKind
    codec: str
    """MIME type, e.g. ``video/VP8``."""
    mid: str | None
    """The publisher transport's media section carrying it."""
    muted: bool = False
    layers: tuple[str, ...] = ()
    """Simulcast: the RIDs of the layers received, lowest first; empty for a single stream."""


@dataclass(frozen=True)
class TrackPublished:
    conference_id: str
    track: TrackInfo


@dataclass(frozen=True)
class TrackUnpublished:
    conference_id: str
    track: TrackInfo


@dataclass(frozen=True)
class TrackMuted:
    conference_id: str
    track: TrackInfo


@dataclass(frozen=True)
class ParticipantStateChanged:
    conference_id: str
    participant_id: str
    state: ParticipantState
    reason: str = ""


@dataclass(frozen=True)
class PublishPermissionChanged:
    """The adapter allowed or forbade a participant to publish; when forbidden, its tracks
    were unpublished (each with :class:`TrackUnpublished`) and what it sends is dropped."""

    conference_id: str
    participant_id: str
    can_publish: bool


@dataclass(frozen=True)
class SpeakersChanged:
    conference_id: str
    speakers: tuple[SpeakerLevel, ...]
    """Speaking participants loudest first, then those who just stopped (``active`` False)."""
    dominant: str | None
    dominant_changed: bool


@dataclass(frozen=True)
class KeyframeRequested:
    conference_id: str
    track_id: str
    reason: str


@dataclass(frozen=True)
class NegotiationNeeded:
    """The SFU changed what a transport sends: the adapter must renegotiate it.

    For an SFU-offered transport call ``Transport.create_offer()``; for a client-offered one
    ask the client for a new offer.
    """

    conference_id: str
    participant_id: str
    transport_id: str


@dataclass(frozen=True)
class StreamStateChanged:
    """Bandwidth adaptation paused a subscriber's stream its downlink cannot carry even at the
    lowest layer, or resumed it (LiveKit ``stream_state_update``)."""

    conference_id: str
    participant_id: str
    """The subscriber."""
    track_id: str
    paused: bool


@dataclass(frozen=True)
class SubscribedLayersChanged:
    """Dynacast: which simulcast layers of a track anyone is forwarded, so that its publisher
    stops encoding the others (LiveKit ``subscribed_quality_update``)."""

    conference_id: str
    participant_id: str
    """The publisher."""
    track_id: str
    enabled: tuple[bool, ...]
    """Per layer of :attr:`TrackInfo.layers`, lowest first."""


@dataclass(frozen=True)
class ConnectionQualityChanged:
    """Participants whose connection quality (from loss, jitter and RTT, both directions)
    changed (LiveKit ``connection_quality_update``)."""

    conference_id: str
    qualities: tuple[tuple[str, ConnectionQuality], ...]
    """(participant id, quality) of each participant whose quality changed."""


Event = (
    TrackPublished
    | TrackUnpublished
    | TrackMuted
    | ParticipantStateChanged
    | PublishPermissionChanged
    | SpeakersChanged
    | KeyframeRequested
    | NegotiationNeeded
    | StreamStateChanged
    | SubscribedLayersChanged
    | ConnectionQualityChanged
)
EventHandler = Callable[[Event], None]

__all__ = [
    "ConnectionQuality",
    "ConnectionQualityChanged",
    "Event",
    "EventHandler",
    "KeyframeRequested",
    "NegotiationNeeded",
    "ParticipantState",
    "ParticipantStateChanged",
    "PublishPermissionChanged",
    "SpeakerLevel",
    "SpeakersChanged",
    "StreamStateChanged",
    "SubscribedLayersChanged",
    "TrackInfo",
    "TrackKind",
    "TrackMuted",
    "TrackPublished",
    "TrackUnpublished",
]
