"""A published track: one incoming RTP stream and its fan-out to subscriptions.

Each inbound packet is canonicalised once (validated, header extensions stripped), recorded in
the shared retransmission history, inspected for key frames and audio level, and handed to
every subscription. RTCP towards the publisher (RR, NACK, rate-limited PLI) goes through
:class:`~sfu.aiortc_seams.PublisherFeedback`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from collections.abc import Callable
from dataclasses import replace
import asyncio
import time

from . import aiortc_seams as seams, h264, vp8
from .events import TrackInfo
from .history import PacketHistory
from .rtp import HEADER, NO_AUDIO_LEVEL, canonicalize, unwrap_rtx

if TYPE_CHECKING:
    from aiortc import RTCRtpReceiver

    from .subscription import Subscription

AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"


class PublishedTrack:
    """An incoming stream from a publisher transport, forwarded without decoding."""

    def __init__(
        self,
        info: TrackInfo,
        receiver: RTCRtpReceiver,
        clock_rate: int,
        rtx_payload_types: dict[int, int],
        audio_level_id: int,
        history_size: int,
        keyframe_interval: float,
        on_keyframe_request: Callable[[str, str], None],
        on_audio_level: Callable[[str, int, float], None],
    ) -> None:
        self.info = info
        self.codec = info.codec
        self.is_vp8 = info.codec.lower() == "video/vp8"
        self.is_video = info.kind == "video"
        self.history = PacketHistory(history_size)
        self.ssrc: int | None = None
        self.packets_received = 0
        self.octets_received = 0
        self.keyframe_requests = 0
        """Key-frame requests sent to the publisher."""
        self.subscriptions: list[Subscription] = []
        self.taps: list[Callable[[bytes, int, int], None]] = []
        """Called with (packet, payload offset, seq) for each unmuted packet: the audio mixer
        decodes from here (the only consumer that looks inside payloads)."""
        self._receiver = receiver
        self._clock_rate = clock_rate
        self._rtx_payload_types = rtx_payload_types
        self._audio_level_id = audio_level_id
        self._feedback: seams.PublisherFeedback | None = None
        self._keyframe_interval = keyframe_interval
        self._last_keyframe_request = -keyframe_interval
        self._pending_request: asyncio.TimerHandle | None = None
        self._on_keyframe_request = on_keyframe_request
        self._on_audio_level = on_audio_level
        self._h264 = info.codec.lower() == "video/h264"

    @property
    def packets_lost(self) -> int:
        """Packets of the publisher that did not arrive (so far, by sequence numbers)."""
        return self._feedback.packets_lost if self._feedback is not None else 0

    @property
    def muted(self) -> bool:
        return self.info.muted

    def set_muted(self, muted: bool) -> None:
        self.info = replace(self.info, muted=muted)
        if not muted:
            # Sequence numbers ran on while muted: restart each subscriber's segment cleanly.
            for subscription in self.subscriptions:
                subscription.resync()
            self.request_keyframe("unmuted")

    def attach(self, subscription: Subscription) -> None:
        self.subscriptions.append(subscription)

    def detach(self, subscription: Subscription) -> None:
        if subscription in self.subscriptions:
            self.subscriptions.remove(subscription)

    def close(self) -> None:
        self.taps.clear()
        for subscription in list(self.subscriptions):
            subscription.switch(None)
        if self._feedback is not None:
            self._feedback.close()
        if self._pending_request is not None:
            self._pending_request.cancel()
        self.history.clear()

    # ------------------------------------------------------------------ RTP

    def accepts(self, ssrc: int) -> bool:
        """Whether a newly seen SSRC may be this track's media or RTX stream.

        The first media SSRC is bound for good (spoofed or stray SSRCs matched by payload type
        must not take the stream over); RTX SSRCs must be declared in the SDP.
        """
        return self.ssrc is None or ssrc in seams.rtx_ssrcs(self._receiver)

    def receive(self, data: bytes, ssrc: int) -> None:
        """One decrypted packet from the publisher; raises MalformedPacket."""
        packet, offset, level = canonicalize(data, self._audio_level_id)
        payload_type = packet[1] & 0x7F
        apt = self._rtx_payload_types.get(payload_type)
        if apt is not None:
            media_ssrc = seams.rtx_ssrcs(self._receiver).get(ssrc, self.ssrc)
            if media_ssrc is None:
                return
            unwrapped = unwrap_rtx(packet, offset, apt, media_ssrc)
            if unwrapped is None or self.history.get(HEADER.unpack_from(unwrapped)[2]):
                return
            packet, ssrc = unwrapped, media_ssrc
        _, _, seq, ts, _ = HEADER.unpack_from(packet)
        if self.ssrc is None:
            self._bind(ssrc)
        assert self._feedback is not None
        self._feedback.received(seq, ts)
        self.packets_received += 1
        self.octets_received += len(packet)
        now = time.monotonic()
        if level != NO_AUDIO_LEVEL:
            self._on_audio_level(self.info.participant_id, level, now)
        self.history.put(seq, packet)
        if self.info.muted:
            return
        for tap in self.taps:
            tap(packet, offset, seq)
        info = None
        if self.is_vp8:
            info = vp8.parse(packet, offset)
            keyframe = info.keyframe
        elif self._h264:
            keyframe = h264.is_keyframe(packet, offset)
        else:
            keyframe = True
        for subscription in self.subscriptions:
            subscription.forward(packet, seq, ts, keyframe, info, now)

    def _bind(self, ssrc: int) -> None:
        self.ssrc = ssrc
        self._feedback = seams.PublisherFeedback(
            self._receiver, ssrc, self._clock_rate, nack=self.is_video
        )
        if self.is_video and self.subscriptions:
            self.request_keyframe("first packet")

    # ------------------------------------------------------------------ RTCP

    def on_sender_report(self, ntp_timestamp: int, rtp_timestamp: int) -> None:
        for subscription in self.subscriptions:
            subscription.on_sender_report(ntp_timestamp, rtp_timestamp)

    def request_keyframe(self, reason: str) -> None:
        """Ask the publisher for a key frame, at most once per ``keyframe_interval``.

        A request inside the interval is deferred to its end rather than dropped, so that a
        subscriber waiting for a key frame is never left waiting for the next natural one.
        """
        if not self.is_video or self._pending_request is not None:
            return
        now = time.monotonic()
        wait = self._last_keyframe_request + self._keyframe_interval - now
        if wait > 0:
            self._pending_request = asyncio.get_running_loop().call_later(
                wait, self._send_keyframe_request, reason
            )
        else:
            self._send_keyframe_request(reason)

    def _send_keyframe_request(self, reason: str) -> None:
        self._pending_request = None
        if self._feedback is None:
            return
        self._last_keyframe_request = time.monotonic()
        self.keyframe_requests += 1
        self._feedback.request_keyframe()
        self._on_keyframe_request(self.info.track_id, reason)
