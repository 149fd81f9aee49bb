"""What the SFU lets a participant do, whatever its client sends: publish only with the right to,
only announced sections and only up to its track limit; negotiations that fail or never connect
leave nothing behind; a borrowed SSRC takes over nobody's stream."""

from __future__ import annotations

from typing import Any
from collections.abc import AsyncIterator
import asyncio
import gc
import itertools

from aiortc import RTCPeerConnection, RTCSessionDescription
from sfu_peers import FAST_CONSENT, ClientPeer, MarkedVideo, Room, ToneAudio, config, wait_for
from test_robustness import keeps_receiving, open_sockets
import pytest

from sfu import (
    SFU,
    MediaSettings,
    ParticipantState,
    ParticipantStateChanged,
    PublishPermissionChanged,
    TrackPublished,
    TrackUnpublished,
    TransportRole,
)
from tests.support.bad_offers import repeated_mid_offer

_ids = itertools.count()


@pytest.fixture(scope="module")
async def strict_sfu() -> AsyncIterator[SFU]:
    """An SFU with small limits, so tests reach them with a few peers."""
    server = SFU(
        MediaSettings(
            bind_addresses=("127.0.0.1",),
            max_tracks_per_participant=2,
            connect_timeout=2.0,
            max_connecting_transports=3,
            **FAST_CONSENT,
        )
    )
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def strict_room(strict_sfu: SFU) -> AsyncIterator[Room]:
    conference_id = f"strict-{next(_ids)}"
    room = Room(lambda on_event: strict_sfu.create_conference(conference_id, on_event))
    yield room
    await room.close()
    await strict_sfu.close_conference(conference_id)


async def offer_tracks(peer: ClientPeer, ids: dict[str, str] | None, kinds: str) -> str:
    """Offer one sending section per letter of ``kinds`` (a: audio, v: video); ``ids`` maps
    the announced ones' kinds+index ("a0", "v1") to track ids. Returns the answer."""
    for index, kind in enumerate(kinds):
        track = ToneAudio(0.1) if kind == "a" else MarkedVideo(30 + 40 * index)
        peer.pub_pc.addTransceiver(track, direction="sendonly")
    await peer.pub_pc.setLocalDescription(await peer.pub_pc.createOffer())
    track_ids = None
    if ids is not None:
        track_ids = {
            t.mid: ids[f"{t.kind[0]}{i}"]
            for i, t in enumerate(peer.pub_pc.getTransceivers())
            if t.mid and f"{t.kind[0]}{i}" in ids
        }
    answer = await peer.publisher.accept_offer(peer.pub_pc.localDescription.sdp, track_ids)
    await peer.pub_pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    return answer


def published_by(room: Room, name: str) -> set[str]:
    return {t.track_id for t in room.conference.tracks if t.participant_id == name}


async def test_unannounced_sections_are_refused(room: Room) -> None:
    alice, mallory = room.add("alice"), room.add("mallory")
    await alice.publish(luma=60, amplitude=0.1)
    answer = await offer_tracks(mallory, {"a0": "mallory-audio"}, "avv")

    assert published_by(room, "mallory") == {"mallory-audio"}
    assert answer.count("a=inactive") == 2
    await keeps_receiving(mallory, "alice")
    # Nobody was made to receive the unannounced sections.
    assert len(alice.participant.subscriptions) == 1


async def test_track_limit_holds_however_sections_arrive(strict_room: Room) -> None:
    """Without announcements (a 1:1 VoIP client's offer) and over several offers."""
    mallory = strict_room.add("mallory")
    await offer_tracks(mallory, None, "av")
    await offer_tracks(mallory, None, "avav")
    assert len(published_by(strict_room, "mallory")) == 2
    audience = strict_room.add("audience")
    await wait_for(lambda: len(audience.participant.subscriptions) == 2)


async def test_publishing_needs_the_right_and_losing_it_unpublishes(room: Room) -> None:
    alice, bob, carol = room.add("alice"), room.add("bob"), room.add("carol")
    bob.participant.set_can_publish(False)
    await alice.publish(luma=60, amplitude=0.1)
    await bob.publish(luma=120, amplitude=0.1)
    assert published_by(room, "bob") == set()
    await keeps_receiving(carol, "alice")
    assert carol.video_from("bob").video_frames == 0

    # Allowed again: the next offer publishes.
    bob.participant.set_can_publish(True)
    await bob.pub_pc.setLocalDescription(await bob.pub_pc.createOffer())
    ids = {t.mid: f"bob-{t.kind}" for t in bob.pub_pc.getTransceivers() if t.mid}
    answer = await bob.publisher.accept_offer(bob.pub_pc.localDescription.sdp, ids)
    await bob.pub_pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    assert published_by(room, "bob") == {"bob-audio", "bob-video"}
    await keeps_receiving(carol, "bob")

    # Demoted mid-call: unpublished at once, others keep their media.
    alice.participant.set_can_publish(False)
    unpublished = {e.track.track_id for e in room.events_of(TrackUnpublished)}
    assert {"alice-audio", "alice-video"} <= unpublished
    assert published_by(room, "alice") == set()
    assert room.events_of(PublishPermissionChanged)[-1] == PublishPermissionChanged(
        room.conference.id, "alice", False
    )
    frames = carol.video_from("alice").video_frames
    await asyncio.sleep(1)
    assert carol.video_from("alice").video_frames <= frames + 5  # what was in flight
    await keeps_receiving(alice, "bob")


async def test_borrowed_ssrc_takes_over_nothing(room: Room) -> None:
    alice, mallory, bob = room.add("alice"), room.add("mallory"), room.add("bob")
    await alice.publish(luma=60, amplitude=0.1)
    await mallory.publish(luma=200)
    await wait_for(lambda: bob.video_from("alice").video_frames >= 5)
    alice_ssrc = next(s.sender._ssrc for s in alice.pub_pc.getTransceivers() if s.kind == "video")
    # Mallory's client sends its own camera under alice's SSRC from now on.
    sender: Any = next(t.sender for t in mallory.pub_pc.getTransceivers() if t.kind == "video")
    sender._ssrc = alice_ssrc
    frames = bob.video_from("alice").video_frames
    await wait_for(lambda: bob.video_from("alice").video_frames >= frames + 30)
    assert all(abs(luma - 60) < 12 for luma in bob.video_from("alice").lumas[-10:])
    assert room.conference.published_track("alice-video").packets_received > 0


async def test_failed_negotiation_leaves_nothing(room: Room) -> None:
    alice, bob = room.add("alice"), room.add("bob")
    await alice.publish(luma=60, amplitude=0.1)
    await wait_for(lambda: bob.video_from("alice").video_frames >= 5)
    gc.collect()
    sockets = open_sockets()

    for i in range(6):
        mallory = room.conference.join(f"mallory{i}")
        transport = mallory.add_transport(TransportRole.SINGLE)
        with pytest.raises(Exception):  # noqa: B017 - aiortc raises several kinds here
            await transport.accept_offer(await repeated_mid_offer(data_channel=i % 2 == 1))
        await room.conference.remove(mallory.id, "bad offer")

    gc.collect()
    await wait_for(lambda: open_sockets() <= sockets)  # closed sockets go on the next loop turn
    gone = [
        e.participant_id
        for e in room.events_of(ParticipantStateChanged)
        if e.state is ParticipantState.DISCONNECTED
    ]
    assert gone == [f"mallory{i}" for i in range(6)]
    assert {p.id for p in room.conference.participants} == {"alice", "bob"}
    await keeps_receiving(bob, "alice")


async def test_transports_that_never_connect_are_dropped(
    strict_sfu: SFU, strict_room: Room
) -> None:
    """Clients that negotiate and then never do ICE hold a port and checks only briefly, and
    while too many are connecting, newcomers are refused rather than everyone slowed down."""
    alice, bob = strict_room.add("alice"), strict_room.add("bob")
    await alice.publish(luma=60, amplitude=0.1)
    await wait_for(lambda: bob.video_from("alice").video_frames >= 5)
    gc.collect()
    sockets = open_sockets()
    assert strict_sfu.accepts_newcomers()

    silent = []
    for i in range(3):
        participant = strict_room.conference.join(f"silent{i}")
        transport = participant.add_transport(TransportRole.SINGLE)
        pc = RTCPeerConnection(config())
        pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        await transport.accept_offer(pc.localDescription.sdp, {})
        await pc.close()  # the client goes quiet: no ICE checks ever answered
        silent.append(participant.id)
    assert not strict_sfu.accepts_newcomers()

    await wait_for(lambda: not any(strict_room.conference.participant(p) for p in silent))
    assert strict_sfu.accepts_newcomers()
    gc.collect()
    await wait_for(lambda: open_sockets() <= sockets)
    await keeps_receiving(bob, "alice")


async def test_malformed_trickle_candidates_are_value_errors(room: Room) -> None:
    peer = room.add("mallory")
    for candidate in (
        "candidate:",
        "candidate:1 1 udp x 1.2.3.4",
        "candidate:1 1 UDP x 1.2.3.4 5 typ host",
    ):
        with pytest.raises(ValueError):
            await peer.publisher.add_remote_candidate(candidate, "0", 0)
    assert room.events_of(TrackPublished) == []
