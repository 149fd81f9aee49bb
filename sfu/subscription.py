"""One outgoing stream to one subscriber: the per-packet fan-out path.

A subscription owns a sender slot (an aiortc transceiver whose sender never encodes) on one of
the subscriber's transports: its own SSRC, a source track that can be switched, sequence /
timestamp / VP8 PictureID rewriting and key-frame gating. Packets are written into the shared
transmit buffer, rewritten in place and sent by :class:`~sfu.aiortc_seams.RtpOutput`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiortc.rtp import RtcpReceiverInfo

from . import aiortc_seams as seams, rtcp, vp8
from .rewriter import SequenceRewriter
from .rtp import HEADER, REWRITE
from .vp8 import PictureIdRewriter, Vp8Info

if TYPE_CHECKING:
    from aiortc import RTCRtpTransceiver
    from aiortc.rtcdtlstransport import RTCDtlsTransport

    from .track import PublishedTrack

_MAX_LENGTH = len(seams.TX_BUFFER) - 256


class Subscription:
    """Forwards one source track (switchable) to one subscriber's sender slot."""

    def __init__(self, subscriber_id: str, transport_id: str, kind: str) -> None:
        self.subscriber_id = subscriber_id
        self.transport_id = transport_id
        self.kind = kind
        self.transceiver: RTCRtpTransceiver | None = None
        self.ssrc = 0
        self.source: PublishedTrack | None = None
        self.paused = False
        self.packets_sent = 0
        self.octets_sent = 0
        self.retransmitted = 0
        self.nacked = 0
        """Packets the subscriber asked for again."""
        self.keyframe_requests = 0
        """PLIs and FIRs from the subscriber."""
        self.packets_lost = 0
        """Cumulative, the highest the subscriber's receiver reports said."""
        self.fraction_lost = 0
        self.jitter = 0
        self._msid: tuple[str, str] | None = None
        self._output: seams.RtpOutput | None = None
        self._payload_types: dict[str, int] = {}
        self._payload_type = -1
        self._waiting = True
        self._rewriter = SequenceRewriter(90000 if kind == "video" else 48000)
        self._picture_ids = PictureIdRewriter()

    def bind(self, transceiver: RTCRtpTransceiver) -> None:
        """Attach the sender slot this stream goes out on (its SSRC is announced in SDP)."""
        self.transceiver = transceiver
        self.ssrc = seams.sender_ssrc(transceiver.sender)
        seams.suppress_sender_reports(transceiver.sender)
        if self._msid is not None:
            seams.set_msid(transceiver.sender, *self._msid)

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
        self.source = source
        self._waiting = True
        self._picture_ids.switch()
        self._select_payload_type()
        if source is not None:
            source.attach(self)
            if self.active:
                source.request_keyframe(f"{self.subscriber_id} switched")

    def set_paused(self, paused: bool) -> None:
        """Stop or resume forwarding while keeping the source: clients pause video they do not
        display (LiveKit's adaptive stream). Resuming starts at the next key frame."""
        if paused == self.paused:
            return
        self.paused = paused
        if not paused:
            self._waiting = True
            if self.source is not None and self.active:
                self.source.request_keyframe(f"{self.subscriber_id} resumed")

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
            self._output = seams.RtpOutput(dtls)
            self._waiting = True
            if self.source is not None:
                self.source.request_keyframe(f"{self.subscriber_id} subscribed")

    def deactivate(self) -> None:
        self._output = None

    def close(self) -> None:
        self.switch(None)
        self.deactivate()

    def _select_payload_type(self) -> None:
        codec = self.source.codec.lower() if self.source is not None else ""
        self._payload_type = self._payload_types.get(codec, -1)

    # ------------------------------------------------------------------ RTP

    def forward(
        self, packet: bytes, seq: int, ts: int, keyframe: bool, info: Vp8Info | None, now: float
    ) -> None:
        """Send one canonical packet of the source (the per-packet hot path)."""
        if self._output is None or self._payload_type < 0 or self.paused:
            return
        if self._waiting:
            if not keyframe:
                return
            self._waiting = False
            self._rewriter.start_segment(seq, ts, now)
        out = self._rewriter.rewrite(seq, ts, now)
        if out is not None:
            self._emit(packet, out[0], out[1], info)

    def _emit(self, packet: bytes, seq: int, ts: int, info: Vp8Info | None) -> None:
        length = len(packet)
        if length > _MAX_LENGTH or self._output is None:
            return
        buf = seams.TX_BUFFER
        buf[:length] = packet
        REWRITE.pack_into(buf, 1, (packet[1] & 0x80) | self._payload_type, seq, ts, self.ssrc)
        if info is not None:
            self._picture_ids.rewrite(buf, info)
        if self._output.send(length):
            self.packets_sent += 1
            self.octets_sent += length - 12

    # ------------------------------------------------------------------ RTCP (rtcp.FeedbackTarget)

    def on_keyframe_request(self) -> None:
        self.keyframe_requests += 1
        if self.source is not None:
            self.source.request_keyframe(f"{self.subscriber_id} PLI/FIR")

    def on_nack(self, lost: list[int]) -> None:
        """Answer from the source's shared history (plain retransmission, no RTX)."""
        self.nacked += len(lost)
        source = self.source
        if source is None or self._waiting:
            return
        for out_seq in lost:
            seq = self._rewriter.source_seq(out_seq)
            packet = source.history.get(seq) if seq is not None else None
            if packet is None:
                continue
            _, _, _, ts, _ = HEADER.unpack_from(packet)
            info = vp8.parse(packet, 12 + 4 * (packet[0] & 0x0F)) if source.is_vp8 else None
            self._emit(packet, out_seq, (ts + self._rewriter.ts_offset) & 0xFFFFFFFF, info)
            self.retransmitted += 1

    def on_receiver_report(self, report: RtcpReceiverInfo) -> None:
        self.fraction_lost = report.fraction_lost
        # Cumulative; kept from going down (duplicates may lower it), as counters must.
        self.packets_lost = max(self.packets_lost, report.packets_lost)
        self.jitter = report.jitter

    def on_sender_report(self, ntp_timestamp: int, rtp_timestamp: int) -> None:
        """Translate the source's sender report into this stream's timeline."""
        if self._output is None or self._waiting:
            return
        self._output.send_rtcp(
            rtcp.sender_report(
                self.ssrc,
                ntp_timestamp,
                rtp_timestamp + self._rewriter.ts_offset,
                self.packets_sent,
                self.octets_sent,
            )
        )
