"""All media on one UDP port: many participants, one socket, routing that strangers cannot
disturb or steal, and tables that empty when participants leave."""

from __future__ import annotations

from typing import Any
from collections.abc import AsyncIterator
from dataclasses import replace
import asyncio
import random
import socket

from aioice import stun
from aiortc import RTCPeerConnection
from sfu_peers import FAST_CONSENT, Room, ToneAudio, config, wait_for
import pytest

from sfu import SFU, MediaSettings, TransportRole
from sfu.udp_mux import SharedSocket, UdpMux, stun_username

_LOOPBACK = MediaSettings(bind_addresses=("127.0.0.1",), **FAST_CONSENT)


@pytest.fixture
async def mux_sfu() -> AsyncIterator[SFU]:
    """An SFU of its own, so that the mux's tables hold only this test's connections."""
    server = SFU(_LOOPBACK)
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def mux_room(mux_sfu: SFU) -> AsyncIterator[Room]:
    room = Room(lambda on_event: mux_sfu.create_conference("mux", on_event))
    yield room
    await room.close()


def _shared(server: SFU) -> SharedSocket:
    assert server.udp_mux is not None
    [shared] = server.udp_mux.sockets
    return shared


def _udp_sockets_on(port: int) -> int:
    """UDP sockets bound to ``port`` on this machine (``/proc/net/udp``, hex ports)."""
    with open("/proc/net/udp") as table:
        return sum(1 for line in list(table)[1:] if int(line.split()[1].split(":")[1], 16) == port)


def _ice(sdp: str, name: str) -> str:
    prefix = f"a={name}:"
    return next(line.removeprefix(prefix) for line in sdp.splitlines() if line.startswith(prefix))


def _binding_request(username: str, password: bytes) -> bytes:
    request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    request.attributes["USERNAME"] = username
    request.attributes["ICE-CONTROLLED"] = 1
    request.attributes["PRIORITY"] = 1
    request.add_message_integrity(password)
    request.add_fingerprint()
    return bytes(request)


async def _stun_reply(sock: socket.socket) -> stun.Message:
    loop = asyncio.get_running_loop()
    data = await asyncio.wait_for(loop.sock_recv(sock, 2048), 10)
    return stun.parse_message(data)


async def test_six_participants_one_socket_and_tables_empty_after(
    mux_sfu: SFU, mux_room: Room
) -> None:
    shared = _shared(mux_sfu)
    port = shared.sockname[1]
    peers = [mux_room.add(f"p{i}") for i in range(6)]
    for peer in peers:
        await peer.publish(amplitude=0.1)
    for peer in peers:
        for other in peers:
            if other is not peer:
                await wait_for(lambda p=peer, o=other: p.audio_from(o.name).audio_frames >= 5)

    ports = {
        int(c.candidate.split()[5])
        for peer in peers
        for transport in (peer.publisher, peer.subscriber)
        for c in transport.local_candidates()
    }
    assert ports == {port}
    assert _udp_sockets_on(port) == 1
    assert shared.routes[0] == 12  # a username fragment per transport
    assert shared.routes[1] >= 12  # at least the client's address of each

    for peer in peers[:3]:
        await mux_room.conference.remove(peer.name)
    live = [t for p in peers for t in (p.publisher, p.subscriber) if t.state != "closed"]
    assert shared.routes[0] == len(live) <= 6
    await mux_room.close()
    await wait_for(lambda: shared.routes == (0, 0, 0))


async def test_media_on_the_shared_socket_skips_aiortcs_receive_queue(mux_room: Room) -> None:
    """Publishers' SRTP is unprotected and forwarded as it is read: aiortc's receive task
    sees only DTLS and SRTCP."""
    alice, bob = mux_room.add("alice"), mux_room.add("bob")
    await alice.publish(amplitude=0.1)
    await wait_for(lambda: bob.audio_from("alice").audio_frames >= 50)
    track = mux_room.conference.published_track("alice-audio")
    assert track is not None
    dtls: Any = alice.publisher.pc.getTransceivers()[0].receiver.transport
    through_aiortc = dtls._RTCDtlsTransport__rx_packets
    assert track.packets_received >= 50
    assert through_aiortc < track.packets_received / 2


async def test_garbage_and_unknown_fragments_disturb_nobody(mux_sfu: SFU, mux_room: Room) -> None:
    shared = _shared(mux_sfu)
    alice, bob = mux_room.add("alice"), mux_room.add("bob")
    await alice.publish(luma=50, amplitude=0.1)
    await bob.publish(amplitude=0.1)
    await wait_for(lambda: bob.video_from("alice").video_frames >= 5)
    routes, dropped = shared.routes, shared.dropped

    rng = random.Random(11)
    cookie = b"\x21\x12\xa4\x42"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
        stranger.setblocking(False)
        junk = [
            b"",
            b"\x00",
            b"\x00\x01\x00\x00" + cookie,  # a STUN header cut short
            _binding_request("nobody:x", b"password"),
            _binding_request("", b"password"),
            b"\x00\x01\x00\x08" + cookie + rng.randbytes(12) + b"\x00\x06\x00\x40abcd",
            b"\x01\x01\x00\x00" + cookie + rng.randbytes(12),  # a response nobody asked for
            b"\x00\x11\x00\x00" + cookie + rng.randbytes(12),  # an indication
        ]
        junk += [bytes([first]) + rng.randbytes(200) for first in (0, 1, 2, 3, 0x16, 0x80)]
        for data in junk:
            stranger.sendto(data, shared.sockname)
        await wait_for(lambda: shared.dropped >= dropped + len(junk))
        with pytest.raises(BlockingIOError):
            stranger.recv(2048)  # nobody answered

    assert shared.routes[:2] == routes[:2]
    frames = bob.video_from("alice").video_frames
    await wait_for(lambda: bob.video_from("alice").video_frames >= frames + 10)


async def test_guessed_fragment_cannot_take_an_address(mux_sfu: SFU, mux_room: Room) -> None:
    shared = _shared(mux_sfu)
    alice, bob = mux_room.add("alice"), mux_room.add("bob")
    await alice.publish(luma=50)
    await bob.publish(amplitude=0.1)
    await wait_for(lambda: bob.video_from("alice").video_frames >= 5)
    sfu_ufrag = _ice(alice.pub_pc.remoteDescription.sdp, "ice-ufrag")
    sfu_password = _ice(alice.pub_pc.remoteDescription.sdp, "ice-pwd").encode()
    client_ufrag = _ice(alice.pub_pc.localDescription.sdp, "ice-ufrag")
    [alice_transport] = shared.attached(sfu_ufrag)
    bob_ufrag = _ice(bob.pub_pc.remoteDescription.sdp, "ice-ufrag")
    [bob_transport] = shared.attached(bob_ufrag)
    [bob_address] = bob_transport.addresses

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
        attacker.bind(("127.0.0.1", 0))
        attacker.setblocking(False)
        here = attacker.getsockname()

        # Alice's fragment, a wrong password: aioice answers 401, the address stays unknown.
        attacker.sendto(_binding_request(f"{sfu_ufrag}:{client_ufrag}", b"guess"), shared.sockname)
        reply = await _stun_reply(attacker)
        assert reply.message_class == stun.Class.ERROR
        assert reply.attributes["ERROR-CODE"][0] == 401
        assert shared.owner(here) is None

        # Bob's address claimed for Alice's connection (as a spoofed source would): refused,
        # and Bob's address stays Bob's.
        forged = _binding_request(f"{sfu_ufrag}:{client_ufrag}", b"guess")
        shared.datagram_received(forged, bob_address)
        assert shared.owner(bob_address) is bob_transport

        # Alice's fragment on a request aioice's parser chokes on (PRIORITY of 2 bytes).
        username = f"{sfu_ufrag}:x".encode()
        attributes = b"\x00\x06" + len(username).to_bytes(2, "big") + username
        attributes += bytes(-len(username) % 4) + b"\x00\x24\x00\x02\x00\x01\x00\x00"
        header = b"\x00\x01" + len(attributes).to_bytes(2, "big") + b"\x21\x12\xa4\x42"
        dropped = shared.dropped
        attacker.sendto(header + bytes(12) + attributes, shared.sockname)
        await wait_for(lambda: shared.dropped > dropped)

        # The control: with Alice's password the same request is answered and learned.
        attacker.sendto(
            _binding_request(f"{sfu_ufrag}:{client_ufrag}", sfu_password), shared.sockname
        )
        reply = await _stun_reply(attacker)
        assert reply.message_class == stun.Class.RESPONSE
        assert shared.owner(here) is alice_transport

    assert shared.owner(bob_address) is bob_transport
    frames = bob.video_from("alice").video_frames
    await wait_for(lambda: bob.video_from("alice").video_frames >= frames + 10)


async def test_port_taken_fails_start_and_port_per_connection_mode() -> None:
    mux = UdpMux()
    mux.open(["127.0.0.1", "192.0.2.1"], 0, skip_unusable=True)  # the second is not local
    assert len(mux.sockets) == 1
    taken = mux.sockets[0].sockname[1]
    with pytest.raises(OSError, match=f"UDP port {taken} on 192.0.2.1"):
        UdpMux().open(["192.0.2.1"], taken)
    try:
        server = SFU(replace(_LOOPBACK, udp_port=taken))
        with pytest.raises(OSError, match=f"UDP port {taken} on 127.0.0.1"):
            await server.start()
    finally:
        mux.close()

    server = SFU(replace(_LOOPBACK, udp_port=None))
    await server.start()
    assert server.udp_mux is None
    conference = server.create_conference("ports")
    clients = []
    try:
        ports = set()
        for name in ("p", "q"):
            transport = conference.join(name).add_transport(TransportRole.PUBLISHER)
            pc = RTCPeerConnection(config())
            clients.append(pc)
            pc.addTransceiver(ToneAudio(0.1), direction="sendonly")
            await pc.setLocalDescription(await pc.createOffer())
            await transport.accept_offer(pc.localDescription.sdp)
            ports |= {int(c.candidate.split()[5]) for c in transport.local_candidates()}
        assert len(ports) == 2
    finally:
        for pc in clients:
            await pc.close()
        await server.close()


def test_stun_username_reads_only_what_is_there() -> None:
    assert stun_username(_binding_request("abcd:efgh", b"pw")) == "abcd:efgh"
    rng = random.Random(5)
    header = b"\x00\x01\x00\x40\x21\x12\xa4\x42" + bytes(12)
    for _ in range(2000):
        data = header + rng.randbytes(rng.randrange(0, 80))
        found = stun_username(data)
        assert found is None or isinstance(found, str)
    assert stun_username(header + b"\x00\x06\x00\x40abcd") is None  # length overruns
    assert stun_username(header + b"\x00\x06\x00\x02\xff\xfe\x00\x00") is None  # not UTF-8
    with pytest.raises(ValueError, match="invalid UDP port"):
        MediaSettings(udp_port=80)
    assert not MediaSettings(udp_port_min=50000, udp_port_max=50009).single_port
