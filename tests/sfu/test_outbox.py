"""The native outbox (sfu/native/fanout.c): each lane's copy of a loaded packet gets the lane's
sequence number, timestamp, SSRC, payload type and VP8 ids, is protected with the lane's SRTP
session and reaches the lane's address, in order; what the socket refuses comes off the lane's
counters."""

from __future__ import annotations

from collections.abc import Iterator
import socket
import struct

from srtp_lanes import Lane, new_outbox
import pytest

from sfu import outbox
from sfu.rtp import HEADER
from sfu.vp8 import parse

PUBLISHER_SSRC = 0x1234


def udp(family: socket.AddressFamily = socket.AF_INET, host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.settimeout(2)
    return sock


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened = [udp() for _ in range(5)]
    yield opened
    for sock in opened:
        sock.close()


def vp8_packet(seq: int, picture_id: int = 300, tl0: int = 7, size: int = 200) -> bytes:
    """A VP8 packet with a 15-bit PictureID and a TL0PICIDX."""
    header = struct.pack("!BBHII", 0x80, 0x80 | 96, seq, 9000 + seq, PUBLISHER_SSRC)
    descriptor = bytes([0x90, 0xC0, 0x80 | picture_id >> 8, picture_id & 0xFF, tl0])
    body = bytes(i & 0xFF for i in range(size - len(header) - len(descriptor)))
    return header + descriptor + body


def received(lane: Lane, sink: socket.socket) -> bytes:
    return lane.rx.unprotect(sink.recv(2048))


def test_each_lane_continues_its_own_numbering_and_ids_protected_at_the_flush(
    sockets: list[socket.socket],
) -> None:
    sender, *sinks = sockets
    box = new_outbox(capacity=3)  # 8 datagrams through 3 slots: two sends when full, then one
    lanes = [Lane(sender, sink.getsockname(), ssrc=0x5000 + i) for i, sink in enumerate(sinks)]
    for i, lane in enumerate(lanes):  # what each sent before: 100 * i, and ids 20 * i
        lane.lane.last_seq, lane.lane.last_ts, lane.lane.last_time = 100 * i, 50_000, 1.0
        lane.lane.last_pid = lane.lane.last_tl0 = 20 * i
        lane.lane.rebase = 1
        lane.lane.segment_start = 10
        lane.lane.seq_offset = (100 * i + 1 - 10) & 0xFFFF
        lane.lane.ts_offset = (50_000 + 90 - (9000 + 10)) & 0xFFFFFFFF
    for seq in (10, 11):
        packet = vp8_packet(seq, picture_id=300 + seq, tl0=7)
        box.load(packet, parse(packet, 12))
        for lane in lanes:
            assert box.forward(lane.lane, seq, 9000 + seq, 2.0) > len(packet)
    box.flush()
    for i, (lane, sink) in enumerate(zip(lanes, sinks, strict=True)):
        for step in (0, 1):
            data = received(lane, sink)
            marker, seq, ts, ssrc = HEADER.unpack_from(data)[1:]
            assert (marker, seq, ssrc) == (0x80 | 100, 100 * i + 1 + step, 0x5000 + i)
            assert ts == 50_000 + 90 + step
            info = parse(data, 12)
            assert (info.picture_id, info.tl0picidx) == (20 * i + 1 + step, 20 * i + 1)
            assert data[17:] == vp8_packet(10)[17:]
        assert (lane.lane.packets_sent, lane.lane.octets_sent) == (2, 2 * (200 - 12))
        assert (lane.lane.last_seq, lane.lane.last_time) == (100 * i + 2, 2.0)
    assert box.unsent == 0


def test_what_is_not_sent(sockets: list[socket.socket]) -> None:
    """Older than the lane's segment, too long, or without a payload type: nothing goes out."""
    sender, sink, *_ = sockets
    box = new_outbox()
    lane = Lane(sender, sink.getsockname())
    box.load(vp8_packet(5), None)
    assert box.forward(lane.lane, 5, 0, 1.0) == 0  # no segment started
    lane.start(6)
    assert box.forward(lane.lane, 5, 0, 1.0) == 0  # older than it
    box.load(vp8_packet(7, size=outbox.MAX_PACKET + 1), None)
    assert box.forward(lane.lane, 7, 0, 1.0) == 0
    box.load(vp8_packet(8), None)
    lane.lane.payload_type = -1
    assert box.forward(lane.lane, 8, 0, 1.0) == 0
    assert lane.lane.packets_sent == 0


def test_ids_the_packet_lacks_or_that_lie_outside_it_are_not_written(
    sockets: list[socket.socket],
) -> None:
    sender, sink, *_ = sockets
    box = new_outbox()
    lane = Lane(sender, sink.getsockname())
    lane.lane.pid_offset = lane.lane.tl0_offset = 5
    plain = struct.pack("!BBHII", 0x80, 96, 1, 2, PUBLISHER_SSRC) + b"\x10payload"
    box.load(plain, parse(plain, 12))  # a descriptor without PictureID or TL0PICIDX
    box.send_rtp(lane.lane, 1, 2)
    truncated = vp8_packet(2)[:15]  # the PictureID's second byte cut off
    box.load(truncated, parse(vp8_packet(2), 12))
    box.send_rtp(lane.lane, 2, 2)
    box.flush()
    assert received(lane, sink)[12:] == plain[12:]
    assert received(lane, sink)[12:] == truncated[12:]


def test_a_retransmission_keeps_the_numbering_it_is_given(sockets: list[socket.socket]) -> None:
    sender, sink, *_ = sockets
    box = new_outbox()
    lane = Lane(sender, sink.getsockname())
    packet = vp8_packet(3)
    box.load(packet, None)
    box.send_rtp(lane.lane, 4321, 8765)
    box.flush()
    assert HEADER.unpack_from(received(lane, sink))[2:4] == (4321, 8765)


def test_rtcp_is_protected_as_rtcp_and_not_counted(sockets: list[socket.socket]) -> None:
    sender, sink, *_ = sockets
    box = new_outbox()
    lane = Lane(sender, sink.getsockname())
    report = struct.pack("!BBHI", 0x80, 200, 6, 0x77) + bytes(20)
    assert box.send_rtcp(lane.lane, report) > len(report)
    box.flush()
    assert lane.rx.unprotect_rtcp(sink.recv(2048)) == report
    assert lane.lane.packets_sent == 0


def test_datagrams_for_another_socket_go_out_on_it(sockets: list[socket.socket]) -> None:
    first, second, sink, *_ = sockets
    box = new_outbox()
    on_first = Lane(first, sink.getsockname(), ssrc=1)
    on_second = Lane(second, sink.getsockname(), ssrc=2)
    box.load(vp8_packet(1), None)
    for seq, lane in enumerate((on_first, on_second, on_first)):
        box.send_rtp(lane.lane, seq, 1)
    box.flush()
    ports = [sink.recvfrom(2048)[1][1] for _ in range(3)]
    assert ports == [first.getsockname()[1], second.getsockname()[1], first.getsockname()[1]]


def test_a_refused_datagram_is_dropped_and_taken_off_its_lane(
    sockets: list[socket.socket],
) -> None:
    sender, sink, *_ = sockets
    box = new_outbox()
    good = Lane(sender, sink.getsockname(), ssrc=1)
    refused = Lane(sender, ("127.0.0.1", 0), ssrc=2)  # port 0: EINVAL from the kernel
    box.load(vp8_packet(1), None)
    for seq, lane in enumerate((good, refused, good)):
        box.send_rtp(lane.lane, seq, 0)
    box.flush()
    assert [HEADER.unpack_from(received(good, sink))[2] for _ in range(2)] == [0, 2]
    assert (good.lane.packets_sent, refused.lane.packets_sent) == (2, 0)
    assert refused.lane.octets_sent == 0
    assert box.unsent == 1


def test_ipv6_destinations() -> None:
    try:
        sender, sink = udp(socket.AF_INET6, "::1"), udp(socket.AF_INET6, "::1")
    except OSError:
        pytest.fail("IPv6 loopback is needed for this test")
    try:
        box = new_outbox()
        lane = Lane(sender, sink.getsockname()[:2])
        packet = vp8_packet(1)
        box.load(packet, None)
        box.send_rtp(lane.lane, 1, 2)
        box.flush()
        assert received(lane, sink)[12:] == packet[12:]
    finally:
        sender.close()
        sink.close()


def test_a_lane_without_a_socket_gets_its_datagram_back(sockets: list[socket.socket]) -> None:
    """A relayed pair has no socket of ours: the caller sends what the outbox protected."""
    sender, sink, *_ = sockets
    box = new_outbox()
    lane = Lane(None, sink.getsockname())
    packet = vp8_packet(1)
    box.load(packet, None)
    length = box.send_rtp(lane.lane, 1, 2)
    assert length < 0
    sender.sendto(box.unqueued(-length), sink.getsockname())
    box.flush()  # nothing was queued
    assert received(lane, sink)[12:] == packet[12:]
    assert lane.lane.packets_sent == 1
