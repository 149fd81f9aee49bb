"""Running totals of the media plane, for monitoring.

The objects that handle packets count them in plain integers as they go (no allocation per
packet); this module only adds them up when someone asks, such as a metrics scrape. What a
track, subscription or transport counted is folded into :class:`MediaCounters` kept by the SFU
when it goes away, so the totals never go backwards while calls come and go.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from dataclasses import dataclass

if TYPE_CHECKING:
    from .conference import Conference
    from .subscription import Subscription
    from .track import PublishedTrack
    from .transport import TransportStats


@dataclass
class MediaCounters:
    """Totals since start; bytes are RTP packet sizes (SRTP decrypted)."""

    packets_in: int = 0
    """Media packets received from publishers (retransmissions they sent included)."""
    bytes_in: int = 0
    packets_out: int = 0
    """Packets forwarded to subscribers, retransmissions included."""
    bytes_out: int = 0
    lost_in: int = 0
    """Packets publishers sent that never reached the SFU (its receive statistics)."""
    lost_out: int = 0
    """Packets subscribers report lost (their receiver reports)."""
    nacked: int = 0
    """Packets subscribers asked to be sent again (NACK)."""
    retransmitted: int = 0
    """NACKed packets answered from the history."""
    keyframe_requests_in: int = 0
    """PLIs and FIRs from subscribers."""
    keyframe_requests_out: int = 0
    """Key-frame requests sent to publishers (after rate limiting)."""
    malformed_rtp: int = 0
    malformed_rtcp: int = 0
    unknown_rtp: int = 0
    """RTP packets on no published stream (unannounced or spoofed SSRCs)."""

    def add_track(self, track: PublishedTrack) -> None:
        self.packets_in += track.packets_received
        self.bytes_in += track.octets_received
        self.lost_in += track.packets_lost
        self.keyframe_requests_out += track.keyframe_requests

    def add_subscription(self, subscription: Subscription) -> None:
        self.packets_out += subscription.packets_sent
        # octets_sent counts payload only, as sender reports need: add the fixed headers.
        self.bytes_out += subscription.octets_sent + 12 * subscription.packets_sent
        self.lost_out += subscription.packets_lost
        self.nacked += subscription.nacked
        self.retransmitted += subscription.retransmitted
        self.keyframe_requests_in += subscription.keyframe_requests

    def add_transport(self, stats: TransportStats) -> None:
        self.malformed_rtp += stats.malformed_rtp
        self.malformed_rtcp += stats.malformed_rtcp
        self.unknown_rtp += stats.unknown_rtp

    def add_conference(self, conference: Conference) -> None:
        """What the conference's live participants and tracks counted so far."""
        for info in conference.tracks:
            self.add_track(conference.published_track(info.track_id))
        for participant in conference.participants:
            for transport in participant.transports:
                self.add_transport(transport.stats)
            for subscription in participant.subscriptions:
                self.add_subscription(subscription)
