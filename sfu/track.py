"""A published track: its incoming RTP streams (one, or one per simulcast layer) and their
fan-out to subscriptions.

Each inbound packet is canonicalised once (validated, header extensions stripped), recorded in
its layer's retransmission history, inspected for key frames and audio level, and handed to
the subscriptions forwarding that layer (or switching to it). RTCP towards the publisher (RR,
NACK, rate-limited PLI) goes through :class:`~sfu.aiortc_seams.PublisherFeedback`, per layer.
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
from .rtp import HEADER, NO_AUDIO_LEVEL, canonicalize, extension_value, unwrap_rtx

if TYPE_CHECKING:
    from aiortc import RTCRtpReceiver

    from .simulcast import SimulcastOffer
    from .subscription import Subscription

AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
LAYER_TIMEOUT = 1.0
"""Seconds without packets after which a simulcast layer counts as stopped (browsers pause
their upper layers when bandwidth or CPU runs short)."""
_CHECK_INTERVAL = 0.25


class Layer:
    """One incoming RTP stream of a track (with its RTX stream): the track's only one, or one
    simulcast encoding. Each has its own SSRC, history, key-frame requests and size."""

    def __init__(self, track: PublishedTrack, rid: str | None, history: int) -> None:
        self.track = track
        self.rid = rid
        self.ssrc: int | None = None
        self.rtx_ssrc: int | None = None
        self.size: tuple[int, int] | None = None
        """Width and height of its last key frame (VP8), None until one arrived."""
        self.history = PacketHistory(history)
        self.octets_received = 0
        self.keyframe_requests = 0
        """Key-frame requests sent to the publisher."""
        self.subscriptions: list[Subscription] = []
        """Subscriptions forwarding this layer, or switching to it at its next key frame."""
        self.packets_received = 0
        self.octets_received = 0
        """Payload and header bytes, for the measured bitrate bandwidth adaptation spends."""
        self.last_packet = -LAYER_TIMEOUT
        self._feedback: seams.PublisherFeedback | None = None
        self._last_keyframe_request = -track.keyframe_interval
        self._pending_request: asyncio.TimerHandle | None = None

    def live(self, now: float) -> bool:
        return now - self.last_packet <= LAYER_TIMEOUT

    @property
    def packets_lost(self) -> int:
        """Packets of the publisher that did not arrive (so far, by sequence numbers)."""
        return self._feedback.packets_lost if self._feedback is not None else 0

    def receive(self, data: bytes, ssrc: int) -> None:
        """One decrypted packet from the publisher; raises MalformedPacket."""
        track = self.track
        packet, offset, level = canonicalize(data, track.audio_level_id)
        apt = track.rtx_payload_types.get(packet[1] & 0x7F)
        if apt is not None:
            media_ssrc = self.ssrc if track.rids else track.sdp_rtx_ssrcs().get(ssrc, self.ssrc)
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
        resumed = track.rids and now - self.last_packet > LAYER_TIMEOUT
        self.last_packet = now
        if resumed:
            track.layers_changed(now)
        if level != NO_AUDIO_LEVEL:
            track.on_audio_level(track.info.participant_id, level, now)
        self.history.put(seq, packet)
        if track.info.muted:
            return
        for tap in track.taps:
            tap(packet, offset, seq)
        info = None
        if track.is_vp8:
            info = vp8.parse(packet, offset)
            keyframe = info.keyframe
            if keyframe and track.rids:
                size = vp8.keyframe_size(packet, offset)
                if size != self.size:
                    self.size = size
                    track.layers_changed(now)
        elif track.is_h264:
            keyframe = h264.is_keyframe(packet, offset)
        else:
            keyframe = True
        if track.rids and now >= track.next_check:
            track.layers_changed(now)
        try:
            for subscription in self.subscriptions:
                subscription.forward(packet, seq, ts, keyframe, info, now, self)
        finally:
            seams.flush_output()

    def _bind(self, ssrc: int) -> None:
        track = self.track
        self.ssrc = ssrc
        self._feedback = seams.PublisherFeedback(
            track.receiver, ssrc, track.clock_rate, nack=track.is_video
        )
        if track.is_video and self.subscriptions:
            self.request_keyframe("first packet")

    def on_sender_report(self, ntp_timestamp: int, rtp_timestamp: int) -> None:
        for subscription in self.subscriptions:
            if subscription.layer is self:
                subscription.on_sender_report(ntp_timestamp, rtp_timestamp)

    def request_keyframe(self, reason: str) -> None:
        """Ask the publisher for a key frame, at most once per ``keyframe_interval``.

        A request inside the interval is deferred to its end rather than dropped, so that a
        subscriber waiting for a key frame is never left waiting for the next natural one.
        """
        if not self.track.is_video or self._pending_request is not None:
            return
        now = time.monotonic()
        wait = self._last_keyframe_request + self.track.keyframe_interval - now
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
        self.track.on_keyframe_request(self.track.info.track_id, reason)

    def send_remb(self, bitrate: int) -> None:
        if self._feedback is not None:
            self._feedback.send_remb(bitrate)

    def statistics(self) -> tuple[int, int, float]:
        """Packets expected and lost from the publisher so far, and the jitter in seconds."""
        return self._feedback.statistics() if self._feedback is not None else (0, 0, 0.0)

    def close(self) -> None:
        if self._feedback is not None:
            self._feedback.close()
        if self._pending_request is not None:
            self._pending_request.cancel()
        self.subscriptions.clear()
        self.history.clear()


class PublishedTrack:
    """A track from a publisher transport, forwarded without decoding."""

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
        simulcast: SimulcastOffer | None = None,
    ) -> None:
        self.rids = simulcast.rids if simulcast is not None else ()
        self.info = replace(info, layers=self.rids)
        self.codec = info.codec
        self.is_vp8 = info.codec.lower() == "video/vp8"
        self.is_h264 = info.codec.lower() == "video/h264"
        self.is_video = info.kind == "video"
        self.screen_share = False
        """Set by the adapter, which knows the source: bandwidth adaptation serves a screen
        share before cameras."""
        self.subscriptions: list[Subscription] = []
        self.taps: list[Callable[[bytes, int, int], None]] = []
        """Called with (packet, payload offset, seq) for each unmuted packet: the audio mixer
        decodes from here (the only consumer that looks inside payloads)."""
        self.receiver = receiver
        self.clock_rate = clock_rate
        self.rtx_payload_types = rtx_payload_types
        self.audio_level_id = audio_level_id
        self.keyframe_interval = keyframe_interval
        self.on_keyframe_request = on_keyframe_request
        self.on_audio_level = on_audio_level
        self.next_check = 0.0
        """When the live layers are next compared with what subscriptions forward."""
        self._rid_ids = (simulcast.rid_id, simulcast.repaired_rid_id) if simulcast else (0, 0)
        self.layers = [Layer(self, rid, history_size) for rid in self.rids or [None]]
        """Lowest first, as offered."""
        self._live: tuple[bool, ...] = ()
        self._sizes: tuple[tuple[int, int] | None, ...] = ()

    @property
    def muted(self) -> bool:
        return self.info.muted

    @property
    def packets_received(self) -> int:
        return sum(layer.packets_received for layer in self.layers)

    @property
    def octets_received(self) -> int:
        return sum(layer.octets_received for layer in self.layers)

    @property
    def packets_lost(self) -> int:
        return sum(layer.packets_lost for layer in self.layers)

    @property
    def keyframe_requests(self) -> int:
        """Key-frame requests sent to the publisher, all layers together."""
        return sum(layer.keyframe_requests for layer in self.layers)

    def set_muted(self, muted: bool) -> None:
        self.info = replace(self.info, muted=muted)
        if not muted:
            # Sequence numbers ran on while muted: restart each subscriber's segment cleanly.
            for subscription in self.subscriptions:
                subscription.resync()
            for layer in self.layers:
                if layer.subscriptions:
                    layer.request_keyframe("unmuted")

    def attach(self, subscription: Subscription) -> None:
        self.subscriptions.append(subscription)

    def detach(self, subscription: Subscription) -> None:
        if subscription in self.subscriptions:
            self.subscriptions.remove(subscription)

    def close(self) -> None:
        self.taps.clear()
        for subscription in list(self.subscriptions):
            subscription.switch(None)
        for layer in self.layers:
            layer.close()

    def sdp_rtx_ssrcs(self) -> dict[int, int]:
        return seams.rtx_ssrcs(self.receiver)

    # ------------------------------------------------------------------ layers

    def stream_for(self, ssrc: int, data: bytes) -> Layer | None:
        """The layer a newly seen SSRC carries (media or RTX), or None to drop it.

        Without simulcast the first media SSRC is bound for good (spoofed or stray SSRCs
        matched by payload type must not take the stream over) and RTX SSRCs must be declared
        in the SDP. With simulcast the RID (repaired RID for RTX) header extension names the
        layer, and each layer binds one SSRC of each. Raises MalformedPacket.
        """
        if not self.rids:
            only = self.layers[0]
            return only if only.ssrc is None or ssrc in self.sdp_rtx_ssrcs() else None
        rid_id, repaired_id = self._rid_ids
        rid = extension_value(data, rid_id)
        repaired = extension_value(data, repaired_id) if rid is None and repaired_id else None
        name = (rid or repaired or b"").decode("ascii", "replace")
        for layer in self.layers:
            if layer.rid != name:
                continue
            if rid is not None and layer.ssrc is None:
                return layer
            if repaired is not None and layer.rtx_ssrc is None:
                layer.rtx_ssrc = ssrc
                return layer
        return None

    def pick(self, wanted: int, now: float) -> Layer:
        """The layer to forward to someone who wants layer ``wanted``: that one, or the
        highest live one below it when it is not arriving (paused by the publisher)."""
        wanted = max(0, min(wanted, len(self.layers) - 1))
        for layer in reversed(self.layers[: wanted + 1]):
            if layer.live(now):
                return layer
        return self.layers[wanted]

    def layer_sizes(self) -> list[tuple[int, int] | None]:
        return [layer.size for layer in self.layers]

    def layers_changed(self, now: float) -> None:
        """Re-choose every subscription's layer if a layer started, stopped or was resized."""
        self.next_check = now + _CHECK_INTERVAL
        live = tuple(layer.live(now) for layer in self.layers)
        sizes = tuple(layer.size for layer in self.layers)
        if live == self._live and sizes == self._sizes:
            return
        self._live, self._sizes = live, sizes
        for subscription in list(self.subscriptions):
            subscription.retarget(now)
