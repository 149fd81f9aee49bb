"""The load generator's WebRTC peers, whichever server they talk to.

A :class:`Publisher` sends pre-encoded media and counts what it sends (and when, for latency).
A receiving :class:`Peer` is, once connected, either a *sink* (its RTP dropped by a BPF filter
in the kernel, counted there) or a *verifier* that counts RTP packets and complete frames
(marker bits) per stream after SRTP, and matches video packets with their send time. The
join probe also decodes.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Callable
from dataclasses import dataclass, field
import asyncio
import re
import struct
import time

from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.rtcconfiguration import RTCBundlePolicy
from aiortc.rtp import RTCP_PSFB_PLI, RtcpPsfbPacket, is_rtcp

from .common import drop_rtp_in_kernel, pre_encoded_track, socket_inode

_U16 = struct.Struct("!H")
_M_VIDEO = re.compile(r"^m=video \d+ \S+ ([\d ]+)", re.MULTILINE)
_RTX = re.compile(r"^a=rtpmap:(\d+) rtx/", re.MULTILINE)
RTCP_PSFB_FIR = 4
STAMP_LIFETIME_S = 2.0


def rtc_configuration() -> RTCConfiguration:
    """No ICE servers (nothing leaves the machine); one bundled transport."""
    return RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


def video_payload_types(sdp: str) -> set[int]:
    return {int(pt) for found in _M_VIDEO.findall(sdp) for pt in found.split()}


def retransmission_payload_types(sdp: str) -> set[int]:
    return {int(pt) for pt in _RTX.findall(sdp)}


def latency_key(data: bytes) -> bytes:
    """Identifies one video packet across the SFU: the VP8 descriptor (with the sender's
    PictureID) and the end of the payload, which SFUs forward unchanged."""
    offset = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x10:
        offset += 4 + 4 * _U16.unpack_from(data, offset + 2)[0]
    return data[offset : offset + 4] + data[-12:]


class SendTimes:
    """When each video packet left a publisher; packets two publishers share are ignored."""

    def __init__(self) -> None:
        self._times: dict[bytes, float | None] = {}

    def sent(self, data: bytes, now: float) -> None:
        key = latency_key(data)
        self._times[key] = None if key in self._times else now
        while self._times:
            oldest = next(iter(self._times))
            stamp = self._times[oldest]
            if stamp is not None and now - stamp < STAMP_LIFETIME_S:
                break
            del self._times[oldest]

    def get(self, data: bytes) -> float | None:
        return self._times.get(latency_key(data))


class Publisher:
    """Audio + video from pre-encoded media, gated until the measurement starts."""

    def __init__(self, media: dict[str, list[bytes]], gate: asyncio.Event) -> None:
        self.audio = pre_encoded_track("audio", media["audio"], gate)
        self.video = pre_encoded_track("video", media["video"], gate)
        self.packets = 0
        self.video_frames = 0
        self.video_packets = 0
        self.keyframe_requests = 0

    @property
    def tracks(self) -> list[Any]:
        return [self.audio, self.video]

    def instrument(self, pc: RTCPeerConnection, send_times: SendTimes) -> None:
        """Count RTP as it goes out (after negotiation) and answer PLI/FIR with a key frame."""
        video_pts = video_payload_types(pc.remoteDescription.sdp)
        for transceiver in pc.getTransceivers():
            sender: Any = transceiver.sender
            if transceiver.kind == "video":
                handle_rtcp = sender._handle_rtcp_packet

                async def on_rtcp(packet: Any, handle_rtcp: Any = handle_rtcp) -> None:
                    if isinstance(packet, RtcpPsfbPacket) and packet.fmt in (
                        RTCP_PSFB_PLI,
                        RTCP_PSFB_FIR,
                    ):
                        self.keyframe_requests += 1
                        self.video.request_keyframe()
                    await handle_rtcp(packet)

                sender._handle_rtcp_packet = on_rtcp
        dtls: Any = pc.getTransceivers()[0].sender.transport
        send_rtp = dtls._send_rtp

        rtx_pts = retransmission_payload_types(pc.remoteDescription.sdp)
        last_seq: dict[bytes, int] = {}

        async def counting_send(data: bytes) -> None:
            """Count each media packet once: retransmissions (RTX, or the same sequence number
            again) answer an SFU's NACK and are not forwarded as such."""
            ssrc, seq = data[8:12], _U16.unpack_from(data, 2)[0]
            if (
                not is_rtcp(data)
                and data[1] & 0x7F not in rtx_pts
                and (ssrc not in last_seq or 0 < (seq - last_seq[ssrc]) & 0xFFFF < 0x8000)
            ):
                last_seq[ssrc] = seq
                self.packets += 1
                if data[1] & 0x7F in video_pts:
                    self.video_packets += 1
                    send_times.sent(data, time.monotonic())
                    if data[1] & 0x80:
                        self.video_frames += 1
            await send_rtp(data)

        dtls._send_rtp = counting_send


@dataclass
class Counts:
    """What a verifier received after SRTP."""

    packets: int = 0
    video_frames: int = 0
    video_packets: int = 0
    first_decoded: float = 0.0
    latencies: list[float] = field(default_factory=list)


@dataclass
class Peer:
    """One participant: its publisher connection and/or its subscriber connection."""

    meeting: int
    pub_pc: RTCPeerConnection | None = None
    publisher: Publisher | None = None
    handle: Any = None
    """The server's id for this participant's feed (Janus) or client (ours)."""
    sub_pc: RTCPeerConnection | None = None
    expected_streams: int = 0
    sources: list[Publisher] = field(default_factory=list)
    """Publishers this peer receives."""
    counts: Counts = field(default_factory=Counts)
    sink_inode: int | None = None
    decode: bool = False
    _filter: Any = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def new_sub_pc(self, expected_streams: int) -> RTCPeerConnection:
        return self.adopt_sub_pc(RTCPeerConnection(rtc_configuration()), expected_streams)

    def adopt_sub_pc(self, pc: RTCPeerConnection, expected_streams: int) -> RTCPeerConnection:
        self.sub_pc = pc
        self.expected_streams = expected_streams
        pc.remove_all_listeners("track")
        pc.on("track", self._on_track)
        return pc

    def _on_track(self, track: Any) -> None:
        if track.kind == "video" and self.decode:
            task = asyncio.ensure_future(self._consume(track))
            self._tasks.add(task)

    async def _consume(self, track: Any) -> None:
        while True:
            await track.recv()
            if not self.counts.first_decoded:
                self.counts.first_decoded = time.monotonic()

    @property
    def receives(self) -> bool:
        return self.expected_streams > 0

    def receiving(self) -> bool:
        """Connected, with every expected stream negotiated."""
        pc = self.sub_pc
        if pc is None or pc.connectionState != "connected":
            return False
        streams = [t for t in pc.getTransceivers() if t.currentDirection == "recvonly"]
        return len(streams) >= self.expected_streams

    def describe(self) -> str:
        pc = self.sub_pc
        if pc is None:
            return "no connection"
        directions = [t.currentDirection for t in pc.getTransceivers()]
        return f"{pc.connectionState}, {directions} for {self.expected_streams} streams"

    def make_sink(self) -> None:
        assert self.sub_pc is not None
        dtls: Any = self.sub_pc.getTransceivers()[0].receiver.transport
        sock = dtls.transport._connection._nominated[1].protocol.transport._sock
        self._filter = drop_rtp_in_kernel(sock, keep_rtcp=True)
        self.sink_inode = socket_inode(sock)

    def make_verifier(self, send_times: SendTimes, recording: Callable[[], bool]) -> None:
        """Count packets and frames after SRTP; decoding continues only if ``decode``."""
        assert self.sub_pc is not None
        video_pts = video_payload_types(self.sub_pc.remoteDescription.sdp)
        dtls: Any = self.sub_pc.getTransceivers()[0].receiver.transport
        handle_rtp = dtls._handle_rtp_data
        counts = self.counts

        async def on_rtp(data: bytes, arrival_time_ms: int) -> None:
            counts.packets += 1
            if data[1] & 0x7F in video_pts:
                counts.video_packets += 1
                if data[1] & 0x80:
                    counts.video_frames += 1
                sent = send_times.get(data)
                if sent is not None and recording():
                    counts.latencies.append(time.monotonic() - sent)
            if self.decode:
                await handle_rtp(data, arrival_time_ms)

        dtls._handle_rtp_data = on_rtp
