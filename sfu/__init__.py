"""The media plane: an SFU that forwards RTP without decoding, on aiortc transports.

Knows nothing about Matrix, HTTP or databases. Adapters create conferences on an :class:`SFU`,
add participants with transports, feed them SDP/ICE and receive :mod:`sfu.events`.
"""

from __future__ import annotations

from .aiortc_seams import SeamError
from .conference import Conference
from .config import IceServer, MediaSettings
from .events import (
    ConnectionQuality,
    ConnectionQualityChanged,
    Event,
    EventHandler,
    KeyframeRequested,
    NegotiationNeeded,
    ParticipantState,
    ParticipantStateChanged,
    PublishPermissionChanged,
    SpeakerLevel,
    SpeakersChanged,
    StreamStateChanged,
    SubscribedLayersChanged,
    TrackInfo,
    TrackKind,
    TrackMuted,
    TrackPublished,
    TrackUnpublished,
)
from .mixer import AudioMixer
from .participant import Participant
from .server import SFU
from .stats import MediaCounters
from .subscription import Subscription
from .transport import LocalCandidate, Transport, TransportRole
from .turn import TurnSecret

__all__ = [
    "SFU",
    "AudioMixer",
    "Conference",
    "ConnectionQuality",
    "ConnectionQualityChanged",
    "Event",
    "EventHandler",
    "IceServer",
    "KeyframeRequested",
    "LocalCandidate",
    "MediaCounters",
    "MediaSettings",
    "NegotiationNeeded",
    "Participant",
    "ParticipantState",
    "ParticipantStateChanged",
    "PublishPermissionChanged",
    "SeamError",
    "SpeakerLevel",
    "SpeakersChanged",
    "StreamStateChanged",
    "SubscribedLayersChanged",
    "Subscription",
    "TrackInfo",
    "TrackKind",
    "TrackMuted",
    "TrackPublished",
    "TrackUnpublished",
    "Transport",
    "TransportRole",
    "TurnSecret",
]
