"""The RTCP an SFU owns: dispatching subscriber feedback and translating sender reports.

aiortc would route subscriber feedback to senders that have no encoder behind them, and send
sender reports describing packets it never sent. Here feedback is routed by SSRC to the SFU's
objects, and each subscriber gets the publisher's NTP/RTP mapping shifted by its own timestamp
offset, which is what receivers need for lip-sync.
"""

from __future__ import annotations

from typing import Protocol
from collections.abc import Mapping
import struct

from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
    unpack_remb_fci,
)

_FIR_SSRC = struct.Struct("!I")


class FeedbackTarget(Protocol):
    """An outgoing stream, as seen by the feedback its receiver sends."""

    def on_keyframe_request(self) -> None: ...

    def on_nack(self, lost: list[int]) -> None: ...

    def on_receiver_report(self, report: RtcpReceiverInfo) -> None: ...


class ReportSource(Protocol):
    """An incoming stream, as seen by its publisher's sender reports."""

    def on_sender_report(self, ntp_timestamp: int, rtp_timestamp: int) -> None: ...


def dispatch(
    packet: AnyRtcpPacket,
    inbound: Mapping[int, ReportSource],
    outbound: Mapping[int, FeedbackTarget],
) -> int | None:
    """Route one RTCP packet by SSRC; returns a REMB bitrate (bit/s) if the packet is one."""
    if isinstance(packet, RtcpSrPacket):
        source = inbound.get(packet.ssrc)
        if source is not None:
            info = packet.sender_info
            source.on_sender_report(info.ntp_timestamp, info.rtp_timestamp)
    if isinstance(packet, RtcpSrPacket | RtcpRrPacket):
        for report in packet.reports:
            target = outbound.get(report.ssrc)
            if target is not None:
                target.on_receiver_report(report)
    elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
        target = outbound.get(packet.media_ssrc)
        if target is not None:
            target.on_nack(packet.lost)
    elif isinstance(packet, RtcpPsfbPacket):
        if packet.fmt == RTCP_PSFB_PLI:
            target = outbound.get(packet.media_ssrc)
            if target is not None:
                target.on_keyframe_request()
        elif packet.fmt == RTCP_PSFB_FIR and len(packet.fci) >= 4:
            # RFC 5104: the media SSRC field is unused, the target SSRC is in the FCI.
            target = outbound.get(_FIR_SSRC.unpack_from(packet.fci)[0])
            if target is not None:
                target.on_keyframe_request()
        elif packet.fmt == RTCP_PSFB_APP:
            try:
                bitrate, _ = unpack_remb_fci(packet.fci)
            except ValueError:
                return None
            return bitrate
    return None


def source_description(ssrc: int, cname: str) -> bytes:
    """The SDES packet naming one outgoing stream's CNAME (sent after each of its SRs)."""
    return bytes(RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=ssrc, items=[(1, cname.encode())])]))


def sender_report(
    ssrc: int, ntp_timestamp: int, rtp_timestamp: int, packets: int, octets: int
) -> bytes:
    """A sender report for one outgoing stream, from a translated NTP/RTP pair."""
    return bytes(
        RtcpSrPacket(
            ssrc=ssrc,
            sender_info=RtcpSenderInfo(
                ntp_timestamp=ntp_timestamp,
                rtp_timestamp=rtp_timestamp & 0xFFFFFFFF,
                packet_count=packets & 0xFFFFFFFF,
                octet_count=octets & 0xFFFFFFFF,
            ),
        )
    )
