"""Simulcast logic without a network: the SDP answer, RID routing, layer choice and switching.

The switching tests drive a real published track and subscription with hand-made packets; the
only stand-in is the subscription's socket output, which records what would be sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
import struct

from aiortc import RTCPeerConnection
from packets import rtp, vp8_payload
from srtp_lanes import Lane
import pytest

from sfu import Subscription, TrackInfo, TrackKind, vp8
from sfu.aiortc_seams import OUTBOX
from sfu.rtp import HEADER, MalformedPacket, extension_value
from sfu.simulcast import SimulcastOffer, choose_layer, complete_answer, parse_offer
from sfu.track import LAYER_TIMEOUT, Layer, PublishedTrack

RID_ID, REPAIRED_ID = 10, 11
SIZES = [(320, 180), (640, 360), (1280, 720)]

OFFER = (
    "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\n"
    "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=mid:1\r\na=sendonly\r\n"
    "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
    f"a=extmap:{RID_ID} urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id\r\n"
    f"a=extmap:{REPAIRED_ID} urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id\r\n"
    "a=rid:q send\r\na=rid:h send\r\na=rid:f send\r\na=simulcast:send q;h;~f\r\n"
)
ANSWER = (
    "v=0\r\no=- 3 4 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=recvonly\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=mid:1\r\na=recvonly\r\n"
    "a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
)


# ---------------------------------------------------------------------- SDP


def test_offer_layers_and_extension_ids() -> None:
    assert parse_offer(OFFER) == {"1": SimulcastOffer(("q", "h", "f"), RID_ID, REPAIRED_ID)}
    without_rid_extension = OFFER.replace("sdes:rtp-stream-id", "sdes:something-else")
    assert parse_offer(without_rid_extension) == {}
    too_many = OFFER.replace("q;h;~f", "q;h;f;a;b").replace(
        "a=rid:f send", "a=rid:f send\r\na=rid:a send\r\na=rid:b send"
    )
    with pytest.raises(ValueError, match="5 layers"):
        parse_offer(too_many)


def test_answer_receives_every_offered_layer() -> None:
    answer = complete_answer(OFFER, ANSWER)
    audio, video = answer.split("\r\nm=")[1:]
    assert "rid" not in audio
    assert "a=rid:q recv\r\na=rid:h recv\r\na=rid:f recv\r\na=simulcast:recv q;h;f" in video
    assert f"a=extmap:{RID_ID} urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id" in video
    assert f"a=extmap:{REPAIRED_ID} urn:ietf:params:rtp-hdrext:sdes:repaired-rtp" in video
    assert "a=simulcast" not in complete_answer(OFFER, ANSWER.replace("recvonly", "inactive"))
    assert "a=simulcast" not in complete_answer(OFFER, ANSWER.replace("video 9", "video 0"))


# ---------------------------------------------------------------------- layer choice


@pytest.mark.parametrize(
    ("tile", "layer"),
    [
        ((160, 90), 0),
        ((320, 180), 0),
        ((321, 180), 1),
        ((640, 200), 1),
        ((400, 400), 2),  # a square tile crops a 16:9 video: its height decides
        ((1280, 720), 2),
        ((1920, 1080), 2),  # nothing covers it: the largest
    ],
)
def test_smallest_layer_that_fills_the_tile(tile: tuple[int, int], layer: int) -> None:
    assert choose_layer(SIZES, *tile) == layer


def test_layers_of_unknown_size_are_passed_over() -> None:
    assert choose_layer([None, None, None], 160, 90) == 2
    assert choose_layer([(320, 180), None, (1280, 720)], 640, 360) == 2
    with pytest.raises(ValueError):
        choose_layer([], 1, 1)


# ---------------------------------------------------------------------- packets


def one_byte_extensions(*elements: tuple[int, bytes]) -> bytes:
    body = b"".join(bytes([ext_id << 4 | len(value) - 1]) + value for ext_id, value in elements)
    body += bytes(-len(body) % 4)
    return struct.pack("!HH", 0xBEDE, len(body) // 4) + body


def test_extension_values_one_and_two_byte() -> None:
    packet = rtp(ext=one_byte_extensions((4, b"1"), (RID_ID, b"h")))
    assert extension_value(packet, RID_ID) == b"h"
    assert extension_value(packet, 4) == b"1"
    assert extension_value(packet, REPAIRED_ID) is None
    assert extension_value(rtp(), RID_ID) is None
    two_byte = struct.pack("!HH", 0x1000, 1) + bytes([RID_ID, 1, ord("f"), 0])
    assert extension_value(rtp(ext=two_byte), RID_ID) == b"f"
    with pytest.raises(MalformedPacket):
        extension_value(rtp(ext=struct.pack("!HH", 0xBEDE, 5)), RID_ID)


def test_vp8_key_frame_size() -> None:
    assert vp8.keyframe_size(rtp(payload=vp8_payload(size=(1280, 720))), 12) == (1280, 720)
    assert vp8.keyframe_size(rtp(payload=vp8_payload(pid=None, tl0=None, size=(64, 48))), 12) == (
        64,
        48,
    )
    assert vp8.keyframe_size(rtp(payload=vp8_payload()), 12) is None  # no start code there


# ---------------------------------------------------------------------- routing and switching


class Output:
    """Stands in for the subscriber's transport, a relayed one (the outbox leaves each datagram
    to it): records the sequence number and PictureID of each packet, decrypted."""

    def __init__(self, subscription: Subscription) -> None:
        self.lane = Lane(None, ("127.0.0.1", 9), subscription.ssrc, subscription.lane)
        self.sent: list[tuple[int, int]] = []

    def send_unqueued(self, length: int) -> None:
        packet = self.lane.rx.unprotect(OUTBOX.unqueued(length))
        self.sent.append((HEADER.unpack_from(packet)[2], vp8.parse(packet, 12).picture_id))


@pytest.fixture
async def track() -> AsyncIterator[PublishedTrack]:
    pc = RTCPeerConnection()
    receiver = pc.addTransceiver("video").receiver
    published = PublishedTrack(
        TrackInfo("cam", "alice", TrackKind.VIDEO, "video/VP8", "1"),
        receiver,
        clock_rate=90000,
        rtx_payload_types={97: 96},
        audio_level_id=0,
        history_size=64,
        keyframe_interval=0.0,
        on_keyframe_request=lambda track_id, reason: None,
        on_audio_level=lambda participant, level, now: None,
        simulcast=SimulcastOffer(("q", "h", "f"), RID_ID, REPAIRED_ID),
    )
    yield published
    published.close()
    await pc.close()


def subscribe(track: PublishedTrack) -> tuple[Subscription, Output]:
    subscription = Subscription("bob", "bob#1", "video")
    output = Output(subscription)
    subscription._output = output  # type: ignore[assignment]
    subscription._payload_types = {"video/vp8": 100}
    subscription.switch(track)
    return subscription, output


class Publisher:
    """A simulcast sender: per layer an SSRC, its own sequence numbers and picture ids."""

    SSRCS = {"q": 0x100, "h": 0x200, "f": 0x300}

    def __init__(self, track: PublishedTrack) -> None:
        self.track = track
        self.seq = {rid: 1000 * i for i, rid in enumerate("qhf")}
        self.pid = {rid: 100 * i for i, rid in enumerate("qhf")}

    def send(self, rid: str, key: bool = False, size: tuple[int, int] | None = None) -> None:
        self.seq[rid] += 1
        self.pid[rid] += 1
        ssrc = self.SSRCS[rid]
        packet = rtp(
            seq=self.seq[rid],
            ts=90 * self.seq[rid],
            ssrc=ssrc,
            ext=one_byte_extensions((RID_ID, rid.encode())),
            payload=vp8_payload(key=key, pid=self.pid[rid], tl0=None, size=size),
        )
        layer = self.track.stream_for(ssrc, packet) if self._unbound(rid) else self._layer(rid)
        assert layer is not None and layer.rid == rid
        layer.receive(packet, ssrc)

    def key(self, rid: str) -> None:
        self.send(rid, key=True, size=SIZES["qhf".index(rid)])

    def _unbound(self, rid: str) -> bool:
        return self._layer(rid).ssrc is None

    def _layer(self, rid: str) -> Layer:
        return self.track.layers["qhf".index(rid)]


def sent_ids(output: Output) -> list[tuple[int, int]]:
    """(sequence number, PictureID) of each packet sent."""
    return output.sent


async def test_rid_routing_binds_one_ssrc_per_layer(track: PublishedTrack) -> None:
    q = rtp(ssrc=1, ext=one_byte_extensions((RID_ID, b"q")))
    assert track.stream_for(1, q) is track.layers[0]
    track.layers[0].receive(q, 1)
    assert track.layers[0].ssrc == 1
    assert track.stream_for(2, rtp(ssrc=2, ext=one_byte_extensions((RID_ID, b"q")))) is None
    assert track.stream_for(3, rtp(ssrc=3, ext=one_byte_extensions((RID_ID, b"x")))) is None
    assert track.stream_for(4, rtp(ssrc=4)) is None  # no RID: cannot be told apart
    rtx = rtp(ssrc=5, pt=97, ext=one_byte_extensions((REPAIRED_ID, b"q")))
    assert track.stream_for(5, rtx) is track.layers[0] and track.layers[0].rtx_ssrc == 5
    assert track.info.layers == ("q", "h", "f")


async def test_subscription_switches_at_the_target_layers_key_frame(
    track: PublishedTrack,
) -> None:
    publisher = Publisher(track)
    for rid in "qhf":  # all layers arrive; sizes become known from their key frames
        publisher.key(rid)
    subscription, output = subscribe(track)
    subscription.prefer_size(160, 90)
    publisher.send("q")  # no key frame of q since the subscription: nothing forwarded yet
    assert subscription.layer is None and not output.sent
    publisher.key("q")
    publisher.send("q")
    publisher.send("f")
    assert subscription.layer is track.layers[0] and len(output.sent) == 2

    subscription.prefer_size(1280, 720)  # a big tile: f from its next key frame on
    publisher.send("q")
    publisher.send("f")
    assert subscription.layer is track.layers[0] and len(output.sent) == 3
    publisher.key("f")
    publisher.send("q")
    publisher.send("f")
    assert subscription.layer is track.layers[2]
    ids = sent_ids(output)
    assert len(ids) == 5
    # One continuous stream across the switch: sequence numbers and PictureIDs run on.
    assert [(seq - ids[0][0]) & 0xFFFF for seq, _ in ids] == [0, 1, 2, 3, 4]
    assert [pid - ids[0][1] for _, pid in ids] == [0, 1, 2, 3, 4]

    subscription.set_max_layer(1)  # a cap below the tile's wish: h
    publisher.key("h")
    assert subscription.layer is track.layers[1]
    assert subscription.wanted_layer() == 1


async def test_a_stopped_layer_is_replaced_by_the_highest_live_one(
    track: PublishedTrack,
) -> None:
    publisher = Publisher(track)
    for rid in "qhf":
        publisher.key(rid)
    subscription, _ = subscribe(track)
    assert subscription.wanted_layer() == 2
    publisher.key("f")
    assert subscription.layer is track.layers[2]
    for layer in track.layers[1:]:  # the publisher pauses h and f
        layer.last_packet -= 2 * LAYER_TIMEOUT
    track.next_check = 0.0
    publisher.send("q")  # q's packets notice it; the switch waits for q's key frame
    assert subscription.layer is track.layers[2]
    publisher.key("q")
    assert subscription.layer is track.layers[0]
    publisher.key("f")  # f resumes: back up at its key frame
    assert subscription.layer is track.layers[2]
