"""Unit tests of the pure per-packet logic (no network)."""

from __future__ import annotations

import struct

from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    AnyRtcpPacket,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSenderInfo,
    RtcpSrPacket,
    pack_remb_fci,
)
from packets import rtp, vp8_payload
import pytest

from sfu import h264, outbox, rtcp, vp8
from sfu.history import PacketHistory
from sfu.rewriter import SequenceRewriter
from sfu.rtp import NO_AUDIO_LEVEL, MalformedPacket, canonicalize, unwrap_rtx
from sfu.speaker import SpeakerDetector

# ---------------------------------------------------------------------- rtp


def test_canonicalize_strips_extensions_and_reads_audio_level() -> None:
    ext = b"\xbe\xde\x00\x02" + b"\x10\x85" + b"\x22\x01\x02\x03" + b"\x00\x00"  # mid-ish, level
    packet, offset, level = canonicalize(rtp(ext=ext), audio_level_id=1)
    assert packet == rtp() and offset == 12
    assert level == 5  # voice bit masked off


def test_canonicalize_two_byte_extension_and_csrcs() -> None:
    ext = b"\x10\x00\x00\x01" + b"\x03\x01\x7f\x00"
    packet, offset, level = canonicalize(rtp(ext=ext, csrcs=1), audio_level_id=3)
    assert packet == rtp(csrcs=1) and offset == 16 and level == 127


def test_canonicalize_without_extension_is_zero_copy() -> None:
    data = rtp()
    packet, _, level = canonicalize(data, audio_level_id=1)
    assert packet is data and level == NO_AUDIO_LEVEL


@pytest.mark.parametrize(
    "data",
    [
        b"\x80\x60\x00",  # short
        b"\x40" + bytes(11),  # version 1
        bytes([0x8F]) + bytes(11),  # CSRCs missing
        rtp(ext=b"\xbe\xde\x00\x09"),  # extension overruns
        bytes([0xA0]) + rtp()[1:-1] + b"\xff",  # padding overruns
    ],
)
def test_canonicalize_rejects_malformed(data: bytes) -> None:
    with pytest.raises(MalformedPacket):
        canonicalize(data, audio_level_id=1)


def test_unwrap_rtx_restores_original() -> None:
    rtx = rtp(seq=500, pt=97, ssrc=0x999, payload=b"\x00\x07media")
    assert unwrap_rtx(rtx, 12, payload_type=96, ssrc=0x1234) == rtp(seq=7, payload=b"media")
    padding_only = bytes([0xA0]) + rtp(pt=97, payload=b"\x00\x00\x02")[1:]
    assert unwrap_rtx(padding_only, 12, 96, 0x1234) is None


# ---------------------------------------------------------------------- codecs


def test_vp8_descriptor() -> None:
    info = vp8.parse(rtp(payload=vp8_payload()), 12)
    assert info.keyframe and info.picture_id == 0x1234 and info.picture_id_bits == 15
    assert info.tl0picidx == 7
    assert not vp8.parse(rtp(payload=vp8_payload(key=False)), 12).keyframe
    assert not vp8.parse(rtp(payload=vp8_payload(start=False)), 12).keyframe
    assert vp8.parse(rtp(payload=b"\x90"), 12) == vp8.NO_INFO  # truncated: tolerated


def test_picture_ids_continue_across_switch() -> None:
    rewriter = vp8.PictureIdRewriter(outbox.lane())
    out = []
    for pid, tl0 in ((100, 5), (101, 6), (9000, 200), (9001, 201)):
        if pid == 9000:
            rewriter.switch()
        out.append(rewriter.rewrite(vp8.parse(rtp(payload=vp8_payload(pid=pid, tl0=tl0)), 12)))
    assert out == [(100, 5), (101, 6), (102, 7), (103, 8)]


def test_h264_keyframes() -> None:
    assert h264.is_keyframe(b"\x65", 0)  # IDR
    assert not h264.is_keyframe(b"\x41", 0)  # non-IDR slice
    assert h264.is_keyframe(b"\x7c\x85", 0)  # FU-A start of IDR
    assert not h264.is_keyframe(b"\x7c\x05", 0)  # FU-A continuation
    assert h264.is_keyframe(b"\x78\x00\x02\x67\x42\x00\x01\x68", 0)  # STAP-A with SPS


# ---------------------------------------------------------------------- history / rewriter


def test_history_keeps_latest_per_slot() -> None:
    history = PacketHistory(4)
    history.put(1, b"a")
    history.put(5, b"b")  # same slot, newer
    assert history.get(1) is None and history.get(5) == b"b" and history.get(2) is None


def test_rewriter_is_continuous_across_sources() -> None:
    rewriter = SequenceRewriter(outbox.lane(), 90000)
    rewriter.start_segment(1000, 50_000, now=10.0)
    first = rewriter.rewrite(1000, 50_000, 10.0)
    second = rewriter.rewrite(1001, 53_000, 10.033)
    assert first is not None and second is not None
    assert second[0] == (first[0] + 1) & 0xFFFF and second[1] - first[1] == 3000
    assert rewriter.rewrite(999, 47_000, 10.04) is None  # older than the segment
    rewriter.start_segment(60_000, 7, now=10.533)  # another publisher
    third = rewriter.rewrite(60_000, 7, 10.533)
    assert third is not None
    assert third[0] == (second[0] + 1) & 0xFFFF
    assert (third[1] - second[1]) & 0xFFFFFFFF == 45_000  # 0.5 s of 90 kHz clock
    assert rewriter.source_seq(third[0]) == 60_000
    assert rewriter.source_seq(second[0]) is None  # previous source: not answerable


# ---------------------------------------------------------------------- speakers


def feed(detector: SpeakerDetector, levels: dict[str, int], start: float, seconds: float) -> float:
    now = start
    while now < start + seconds:
        for pid, level in levels.items():
            detector.observe(pid, level, now)
        now += 0.02
    return now


def test_speaker_detection_hysteresis_and_hold() -> None:
    detector = SpeakerDetector()
    now = feed(detector, {"a": 10, "b": 60, "c": 127}, 0.0, 1.0)
    update = detector.update(now)
    assert update is not None
    speakers, changed = update
    assert changed and detector.dominant == "a"
    assert [s.participant_id for s in speakers if s.active] == ["a"]
    assert detector.update(now) is None  # nothing changed
    now = feed(detector, {"a": 127, "b": 5}, now, 0.3)  # b louder, but a holds the floor
    update = detector.update(now)
    assert detector.dominant == "b" or update is None or not update[1]
    now = feed(detector, {"a": 127, "b": 5}, now, 1.5)
    detector.update(now)
    assert detector.dominant == "b"
    detector.remove("b")
    detector.update(now + 0.2)
    assert detector.dominant != "b"


# ---------------------------------------------------------------------- rtcp


class Target:
    def __init__(self) -> None:
        self.keyframes = 0
        self.nacks: list[int] = []
        self.reports: list[RtcpReceiverInfo] = []
        self.srs: list[tuple[int, int]] = []

    def on_keyframe_request(self) -> None:
        self.keyframes += 1

    def on_nack(self, lost: list[int]) -> None:
        self.nacks += lost

    def on_receiver_report(self, report: RtcpReceiverInfo) -> None:
        self.reports.append(report)

    def on_sender_report(self, ntp_timestamp: int, rtp_timestamp: int) -> None:
        self.srs.append((ntp_timestamp, rtp_timestamp))


def test_rtcp_dispatch_by_ssrc() -> None:
    sub, pub, other = Target(), Target(), Target()
    outbound, inbound = {10: sub, 11: other}, {20: pub}
    nack = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=1, media_ssrc=10)
    nack.lost = [5, 6]
    report = RtcpReceiverInfo(
        ssrc=10, fraction_lost=3, packets_lost=1, highest_sequence=9, jitter=4, lsr=0, dlsr=0
    )
    packets: list[AnyRtcpPacket] = [
        RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=10),
        RtcpPsfbPacket(fmt=RTCP_PSFB_FIR, ssrc=1, media_ssrc=0, fci=struct.pack("!II", 10, 0)),
        nack,
        RtcpRrPacket(ssrc=1, reports=[report]),
        RtcpSrPacket(
            ssrc=20,
            sender_info=RtcpSenderInfo(
                ntp_timestamp=77, rtp_timestamp=88, packet_count=1, octet_count=1
            ),
        ),
    ]
    assert all(rtcp.dispatch(p, inbound, outbound) is None for p in packets)
    assert sub.keyframes == 2 and sub.nacks == [5, 6] and sub.reports == [report]
    assert pub.srs == [(77, 88)] and other.keyframes == 0
    remb = RtcpPsfbPacket(
        fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=pack_remb_fci(1_500_000, [10])
    )
    assert rtcp.dispatch(remb, inbound, outbound) == pytest.approx(1_500_000, rel=0.01)


def test_sender_report_translation() -> None:
    (packet,) = RtcpPacket.parse(rtcp.sender_report(5, 1 << 40, (1 << 32) + 3, 10, 1000))
    assert isinstance(packet, RtcpSrPacket) and packet.ssrc == 5
    assert packet.sender_info.ntp_timestamp == 1 << 40
    assert packet.sender_info.rtp_timestamp == 3  # wrapped to 32 bits
    assert packet.sender_info.packet_count == 10
