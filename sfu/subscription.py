"""One outgoing stream to one subscriber: the per-packet fan-out path.

A subscription owns a sender slot (an aiortc transceiver whose sender never encodes) on one of
the subscriber's transports: its own SSRC, a source track that can be switched, sequence /
timestamp / VP8 PictureID rewriting and key-frame gating. What it decides per packet (whether
to send, and the header and ids to send with) goes to the native outbox (:mod:`sfu.outbox`),
which copies, rewrites, protects and queues; whoever forwards flushes the outbox afterwards.

Of a simulcast source it forwards one layer: the smallest that fills the subscriber's tile
(:meth:`Subscription.prefer_size`), or the one asked for (:meth:`Subscription.prefer_layer`),
never above :attr:`Subscription.max_layer`. A change of layer takes effect at the new layer's
next key frame (requested at once), with the outgoing stream continuous across it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
import time

from aiortc.rtp import RtcpReceiverInfo

from . import aiortc_seams as seams, outbox, rtcp, vp8
from .aiortc_seams import OUTBOX
from .rewriter import SequenceRewriter
from .rtp import HEADER
from .simulcast import choose_layer
from .vp8 import PictureIdRewriter, Vp8Info

if TYPE_CHECKING:
    from aiortc import RTCRtpTransceiver
    from aiortc.rtcdtlstransport import RTCDtlsTransport

    from .track import Layer, PublishedTrack

_WAITING = "waiting for a key frame"
"""Repeated (at the publisher's rate limit) until one comes: a browser drops requests that
follow its last key frame too closely, and the subscriber would wait for the next natural one."""


class Subscription:
    """Forwards one source track (switchable) to one subscriber's sender slot."""

    def __init__(self, subscriber_id: str, transport_id: str, kind: str) -> None:
        self.subscriber_id = subscriber_id
        self.transport_id = transport_id
        self.kind = kind
        self.transceiver: RTCRtpTransceiver | None = None
        self.lane = outbox.lane()
        """Where its packets go, and their counters (C memory, read by the native outbox)."""
        self.source: PublishedTrack | None = None
        self.layer: Layer | None = None
        """The source's layer being forwarded (None until the first key frame)."""
        self.max_layer: int | None = None
        """Highest layer index allowed whatever the tile (a bandwidth cap); None: no cap."""
        self.paused = False
        """Paused by the subscriber (a hidden tile)."""
        self.congested = False
        """Paused by bandwidth adaptation: its downlink cannot carry even the lowest layer."""
        self._halted = False
        self.retransmitted = 0
        self.nacked = 0
        """Packets the subscriber asked for again."""
        self.keyframe_requests = 0
        """PLIs and FIRs from the subscriber."""
        self.packets_lost = 0
        """Cumulative, the highest the subscriber's receiver reports said."""
        self.fraction_lost = 0
        self.jitter = 0
        self.reported_lost = 0
        """Cumulative packets lost, from the subscriber's last receiver report."""
        self.reported_highest = 0
        """Extended highest sequence number received, from the same report."""
        self.packets_in_report = 0
        """Packets sent between the subscriber's last two receiver reports."""
        self._packets_at_report = 0
        self._msid: tuple[str, str] | None = None
        self._output: seams.RtpOutput | None = None
        self._source_description = b""
        """The SDES sent with each SR (RFC 3550 compound packet), made at the first SR (aiortc
        knows the CNAME once the sender runs)."""
        self._payload_types: dict[str, int] = {}
        self._payload_type = -1
        self._waiting = True
        self._target: Layer | None = None
        self._preference: tuple[int, int] | int | None = None
        self._rewriter = SequenceRewriter(self.lane, 90000 if kind == "video" else 48000)
        self._picture_ids = PictureIdRewriter(self.lane)

    def bind(self, transceiver: RTCRtpTransceiver) -> None:
        """Attach the sender slot this stream goes out on (its SSRC is announced in SDP)."""
        self.transceiver = transceiver
        self.ssrc = seams.sender_ssrc(transceiver.sender)
        seams.park_sender(transceiver.sender)
        if self._msid is not None:
            seams.set_msid(transceiver.sender, *self._msid)

    @property
    def ssrc(self) -> int:
        return int(self.lane.ssrc)

    @ssrc.setter
    def ssrc(self, ssrc: int) -> None:
        self.lane.ssrc = ssrc

    @property
    def packets_sent(self) -> int:
        return int(self.lane.packets_sent)

    @property
    def octets_sent(self) -> int:
        """Payload octets sent (as RTCP sender reports count them)."""
        return int(self.lane.octets_sent)

    @property
    def mid(self) -> str | None:
        return self.transceiver.mid if self.transceiver is not None else None

    @property
    def active(self) -> bool:
        return self._output is not None

    def set_msid(self, stream_id: str, track_id: str) -> None:
        """Choose the ``a=msid`` announced for this stream (takes effect on renegotiation)."""
        self._msid = (stream_id, track_id)
        if self.transceiver is not None:
            seams.set_msid(self.transceiver.sender, stream_id, track_id)

    # ------------------------------------------------------------------ source

    def switch(self, source: PublishedTrack | None) -> None:
        """Forward ``source`` from its next key frame on, continuing seq/ts/PictureID."""
        if source is self.source:
            return
        if source is not None and source.info.kind != self.kind:
            raise ValueError(f"cannot send {source.info.kind} on a {self.kind} slot")
        if self.source is not None:
            self.source.detach(self)
        self._leave(self.layer)
        self._leave(self._target)
        self.layer = self._target = None
        self.source = source
        self._waiting = True
        self._select_payload_type()
        if source is not None:
            source.attach(self)
            self.retarget(time.monotonic())

    def prefer_size(self, width: int, height: int) -> None:
        """The subscriber shows the source in a ``width`` x ``height`` tile (device pixels)."""
        self._prefer((width, height))

    def prefer_layer(self, index: int | None) -> None:
        """The subscriber asks for layer ``index`` (lowest is 0); None: the highest."""
        self._prefer(index)

    def set_max_layer(self, max_layer: int | None) -> None:
        """Cap the layer whatever the tile asks for (None lifts the cap)."""
        if max_layer == self.max_layer:
            return
        self.max_layer = max_layer
        self.retarget(time.monotonic())

    def _prefer(self, preference: tuple[int, int] | int | None) -> None:
        if preference != self._preference:
            self._preference = preference
            self.retarget(time.monotonic())

    def preferred_layer(self) -> int:
        """The layer index the subscriber's tile (or request) calls for, whatever the cap."""
        if self.source is None:
            return 0
        preference = self._preference
        if isinstance(preference, tuple):
            return choose_layer(self.source.layer_sizes(), *preference)
        if preference is None:
            return len(self.source.layers) - 1
        return preference

    def wanted_layer(self) -> int:
        """The layer index the preference and the cap call for."""
        wanted = self.preferred_layer()
        return wanted if self.max_layer is None else min(wanted, self.max_layer)

    def retarget(self, now: float) -> None:
        """Choose the layer to forward now; a change waits for that layer's key frame."""
        if self.source is None:
            return
        layer = self.source.pick(self.wanted_layer(), now)
        if layer is self.layer or layer is self._target:
            if layer is self.layer and self._target is not None:
                self._leave(self._target)
                self._target = None
            return
        self._leave(self._target)
        self._target = layer
        layer.subscriptions.append(self)
        if self.active and not self._halted:
            layer.request_keyframe(f"{self.subscriber_id} switched")

    def _awaited(self) -> Layer | None:
        """The layer whose key frame this subscription waits for, or would."""
        return self._target or self.layer

    def _leave(self, layer: Layer | None) -> None:
        if layer is not None and self in layer.subscriptions:
            layer.subscriptions.remove(self)

    def set_paused(self, paused: bool) -> None:
        """Stop or resume forwarding while keeping the source: clients pause video they do not
        display (LiveKit's adaptive stream). Resuming starts at the next key frame."""
        self.paused = paused
        self._halt()

    def set_congested(self, congested: bool) -> None:
        """Stop or resume forwarding for want of bandwidth, independently of the subscriber's
        own pause. Resuming starts at the next key frame."""
        self.congested = congested
        self._halt()

    def _halt(self) -> None:
        halted = self.paused or self.congested
        if halted == self._halted:
            return
        self._halted = halted
        if not halted:
            self._waiting = True
            layer = self._awaited()
            if layer is not None and self.active:
                layer.request_keyframe(f"{self.subscriber_id} resumed")

    def resync(self) -> None:
        """Wait for the next key frame and start a new segment there."""
        self._waiting = True

    def activate(self, dtls: RTCDtlsTransport) -> None:
        """The slot is negotiated and its transport connected: start sending."""
        assert self.transceiver is not None
        self._payload_types = {
            codec.mimeType.lower(): codec.payloadType
            for codec in seams.negotiated_codecs(self.transceiver)
            if codec.payloadType is not None
        }
        self._select_payload_type()
        if self._output is None:
            self._output = seams.RtpOutput(dtls, self.lane)
            self._waiting = True
            layer = self._awaited()
            if layer is not None:
                layer.request_keyframe(f"{self.subscriber_id} subscribed")

    def deactivate(self) -> None:
        self._output = None

    def close(self) -> None:
        self.switch(None)
        self.deactivate()

    def _select_payload_type(self) -> None:
        codec = self.source.codec.lower() if self.source is not None else ""
        self._payload_type = self.lane.payload_type = self._payload_types.get(codec, -1)

    # ------------------------------------------------------------------ RTP

    def forward(
        self,
        packet: bytes,
        seq: int,
        ts: int,
        keyframe: bool,
        info: Vp8Info | None,
        now: float,
        layer: Layer,
    ) -> None:
        """Send one canonical packet of the source (the per-packet hot path)."""
        if self._output is None or self._payload_type < 0 or self._halted:
            return
        if layer is not self.layer:
            if not keyframe:
                layer.request_keyframe(_WAITING)
                return
            self._enter(layer)
        if self._waiting:
            if not keyframe:
                layer.request_keyframe(_WAITING)
                return
            self._waiting = False
            self._rewriter.start_segment(seq, ts, now)
        if packet is not OUTBOX.loaded:
            OUTBOX.load(packet, info)
        length = OUTBOX.forward(self.lane, seq, ts, now)
        if length < 0:
            self._output.send_unqueued(-length)

    def _enter(self, layer: Layer) -> None:
        """Forward ``layer`` from its key frame on: a new segment, ids continued."""
        previous, self.layer, self._target = self.layer, layer, None
        self._leave(previous)
        self._waiting = True
        self._picture_ids.switch()

    def _retransmit(self, packet: bytes, seq: int, ts: int, info: Vp8Info | None) -> None:
        output = self._output
        if output is None:
            return
        if packet is not OUTBOX.loaded:
            OUTBOX.load(packet, info)
        length = OUTBOX.send_rtp(self.lane, seq, ts)
        if length < 0:
            output.send_unqueued(-length)

    # ------------------------------------------------------------------ RTCP (rtcp.FeedbackTarget)

    def on_keyframe_request(self) -> None:
        self.keyframe_requests += 1
        layer = self._awaited()
        if layer is not None:
            layer.request_keyframe(f"{self.subscriber_id} PLI/FIR")

    def on_nack(self, lost: list[int]) -> None:
        """Answer from the source's shared history (plain retransmission, no RTX)."""
        self.nacked += len(lost)
        source = self.layer
        if source is None or self._waiting:
            return
        for out_seq in lost:
            seq = self._rewriter.source_seq(out_seq)
            packet = source.history.get(seq) if seq is not None else None
            if packet is None:
                continue
            _, _, _, ts, _ = HEADER.unpack_from(packet)
            info = vp8.parse(packet, 12 + 4 * (packet[0] & 0x0F)) if source.track.is_vp8 else None
            self._retransmit(packet, out_seq, (ts + self._rewriter.ts_offset) & 0xFFFFFFFF, info)
            self.retransmitted += 1
        seams.flush_output()

    def on_receiver_report(self, report: RtcpReceiverInfo) -> None:
        self.fraction_lost = report.fraction_lost
        # Cumulative; kept from going down (duplicates may lower it), as counters must.
        self.packets_lost = max(self.packets_lost, report.packets_lost)
        self.jitter = report.jitter
        self.reported_lost = report.packets_lost
        self.reported_highest = report.highest_sequence
        self.packets_in_report = self.packets_sent - self._packets_at_report
        self._packets_at_report = self.packets_sent

    def on_sender_report(self, ntp_timestamp: int, rtp_timestamp: int) -> None:
        """Translate the source's sender report into this stream's timeline; the stream's
        SDES goes in the same compound packet."""
        if self._output is None or self._waiting:
            return
        report = rtcp.sender_report(
            self.ssrc,
            ntp_timestamp,
            rtp_timestamp + self._rewriter.ts_offset,
            self.packets_sent,
            self.octets_sent,
        )
        if not self._source_description and self.transceiver is not None:
            cname = seams.sender_cname(self.transceiver.sender)
            self._source_description = rtcp.source_description(self.ssrc, cname) if cname else b""
        self._output.send_rtcp(report + self._source_description)
