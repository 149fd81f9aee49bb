"""Failure handling: vanished peers, join/leave churn, garbage on the media port."""

from __future__ import annotations

from typing import Any
import asyncio
import contextlib
import gc
import os
import random
import socket
import weakref

from aiortc import MediaStreamTrack, RTCSessionDescription
from sfu_peers import ClientPeer, Room, wait_for

from sfu import ParticipantState, ParticipantStateChanged, TrackUnpublished, Transport


class IdleTrack(MediaStreamTrack):
    """An audio track that never produces a frame: its SSRC is free for crafted packets."""

    kind = "audio"

    async def recv(self) -> Any:
        await asyncio.get_running_loop().create_future()


def open_sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(FileNotFoundError):  # the descriptor listdir itself used
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


async def keeps_receiving(peer: ClientPeer, name: str, frames: int = 15) -> None:
    start = peer.video_from(name).video_frames
    await wait_for(lambda: peer.video_from(name).video_frames >= start + frames)


async def test_vanished_participant_is_removed(room: Room) -> None:
    alice, bob, carol = room.add("alice"), room.add("bob"), room.add("carol")
    for peer, luma in ((alice, 40), (bob, 120), (carol, 200)):
        await peer.publish(luma=luma, amplitude=0.1)
    await wait_for(lambda: alice.video_from("carol").video_frames >= 5)

    await carol.vanish()  # no leave, no DTLS close: only ICE consent can tell

    def carol_gone() -> bool:
        return any(
            isinstance(e, ParticipantStateChanged)
            and e.participant_id == "carol"
            and e.state is ParticipantState.DISCONNECTED
            for e in room.events
        )

    await wait_for(carol_gone, timeout=30)
    unpublished = {e.track.track_id for e in room.events_of(TrackUnpublished)}
    assert unpublished == {"carol-audio", "carol-video"}
    assert room.conference.participant("carol") is None
    assert {t.participant_id for t in room.conference.tracks} == {"alice", "bob"}
    await keeps_receiving(alice, "bob")
    await keeps_receiving(bob, "alice")


async def test_join_leave_cycles_leak_nothing(room: Room) -> None:
    alice = room.add("alice")
    await alice.publish(luma=80, amplitude=0.1)
    await asyncio.sleep(0.5)

    async def cycle(i: int) -> weakref.ref[Transport]:
        peer = room.add(f"guest{i}")
        await wait_for(lambda: peer.audio_from("alice").audio_frames >= 2)
        ref = weakref.ref(peer.subscriber)
        await room.conference.remove(peer.participant.id)
        await peer.close()
        del room.peers[peer.name]
        return ref

    await cycle(-1)  # warm-up: lazily created loop resources
    gc.collect()
    tasks, sockets = len(asyncio.all_tasks()), open_sockets()
    refs = [await cycle(i) for i in range(50)]
    await asyncio.sleep(0.5)
    gc.collect()

    assert len(asyncio.all_tasks()) <= tasks
    assert open_sockets() <= sockets
    assert sum(ref() is not None for ref in refs) == 0
    assert len(room.conference.participants) == 1
    assert len(room.conference.published_track("alice-video").subscriptions) == 0


async def test_garbage_on_media_port_does_not_disturb(room: Room) -> None:
    alice, bob = room.add("alice"), room.add("bob")
    await alice.publish(luma=50, amplitude=0.1)
    await bob.publish(luma=150, amplitude=0.1)
    await wait_for(lambda: bob.video_from("alice").video_frames >= 5)

    # 1. Unauthenticated junk from a stranger, shaped like RTP, RTCP, DTLS, STUN and noise.
    rng = random.Random(7)
    ports = {
        int(c.candidate.split()[5])
        for p in (alice, bob)
        for t in (p.publisher, p.subscriber)
        for c in t.local_candidates()
    }
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        for i in range(400):
            first = (0x80, 0x80, 0x16, 0x00, rng.randrange(256))[i % 5]
            second = (0x60, 0xC8, 0xFE, 0x01, rng.randrange(256))[i % 5]
            junk = bytes([first, second]) + rng.randbytes(rng.randrange(0, 1200))
            for port in ports:
                stranger.sendto(junk, ("127.0.0.1", port))
            if i % 50 == 0:
                await asyncio.sleep(0)

    # 2. Authenticated but malformed RTP/RTCP from a participant (SRTP-protected by aiortc),
    # on a stream of its own so that replay protection accepts the crafted sequence numbers.
    # (libsrtp itself refuses to protect headers whose CSRC/extension lengths overrun.)
    mallory = room.add("mallory")
    sender: Any = mallory.pub_pc.addTransceiver(IdleTrack(), direction="sendonly").sender
    await mallory.pub_pc.setLocalDescription(await mallory.pub_pc.createOffer())
    answer = await mallory.publisher.accept_offer(mallory.pub_pc.localDescription.sdp)
    await mallory.pub_pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    dtls: Any = sender.transport
    await wait_for(lambda: dtls.state == "connected")
    ssrc = sender._ssrc.to_bytes(4, "big")
    good = bytes([0x80, 96, 0, 0, 0, 0, 0, 0]) + ssrc + b"\xf8\xff\xfe"
    await dtls._send_rtp(good)
    for seq in range(1, 61, 3):
        for data in (
            bytes([0xA0, 96, 0, seq, 0, 0, 0, 0]) + ssrc + b"\x00\xff",  # padding overruns
            bytes([0xA0, 96, 0, seq + 1, 0, 0, 0, 0]) + ssrc + b"\x01\x00",  # zero padding
            bytes([0x80, 96, 0, seq + 2]) + bytes(4) + rng.randbytes(4),  # unknown SSRC
            b"\x80\xc8\x00\x20" + bytes(8),  # sender report longer than the datagram
            b"\x81\xcd\x00\x02" + bytes(4),  # truncated NACK
        ):
            await dtls._send_rtp(data)

    stats = mallory.publisher.stats
    await wait_for(lambda: stats.malformed_rtp >= 40 and stats.malformed_rtcp >= 20)
    assert stats.unknown_rtp >= 1
    await keeps_receiving(bob, "alice")
    await keeps_receiving(alice, "bob")
    assert {p.id for p in room.conference.participants} == {"alice", "bob", "mallory"}
