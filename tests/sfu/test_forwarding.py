"""End-to-end forwarding between real aiortc peers through the SFU."""

from __future__ import annotations

import asyncio

from sfu_peers import Room, tap_received_payloads, tap_sent_payloads, wait_for

LUMAS = {"alice": 40, "bob": 120, "carol": 200}


def decoded_marker(frames: list[float], expected: int) -> bool:
    recent = frames[-5:]
    return len(recent) == 5 and all(abs(luma - expected) < 12 for luma in recent)


async def test_three_participants_decode_each_other(room: Room) -> None:
    peers = [room.add(name) for name in LUMAS]
    for peer in peers:
        await peer.publish(luma=LUMAS[peer.name], amplitude=0.1)

    def everyone_decodes() -> bool:
        return all(
            peer.video_from(other).video_frames >= 10
            and decoded_marker(peer.video_from(other).lumas, LUMAS[other])
            and peer.audio_from(other).audio_frames >= 10
            for peer in peers
            for other in LUMAS
            if other != peer.name
        )

    await wait_for(everyone_decodes, timeout=30)
    for peer in peers:
        assert peer.video_from(peer.name).video_frames == 0  # nobody receives itself


async def test_payload_bytes_arrive_untouched(room: Room) -> None:
    alice, bob = room.add("alice"), room.add("bob")
    await alice.publish(luma=LUMAS["alice"], amplitude=0.1)
    sent = tap_sent_payloads(alice)
    await wait_for(lambda: bool(bob.sub_pc.getTransceivers()))
    received = tap_received_payloads(bob)
    await wait_for(lambda: bob.video_from("alice").video_frames >= 20)
    await wait_for(lambda: sum(len(p) for p in received.values()) >= 100)
    subscription_ssrcs = {s.ssrc for s in bob.participant.subscriptions}
    assert set(received) <= subscription_ssrcs
    for payloads in received.values():
        assert payloads <= sent  # every forwarded payload is byte-identical to a sent one


async def test_paused_subscription_stops_and_resumes_with_a_decodable_frame(room: Room) -> None:
    """Clients pause video they do not display (LiveKit's adaptive stream); the source stays."""
    alice, bob = room.add("alice"), room.add("bob")
    await alice.publish(luma=LUMAS["alice"])
    await wait_for(lambda: bob.video_from("alice").video_frames >= 10)
    subscription = bob.participant.subscription_for("alice-video")
    assert subscription is not None

    subscription.set_paused(True)
    sent_when_paused = subscription.packets_sent
    frames = bob.video_from("alice").video_frames
    await asyncio.sleep(1)
    assert subscription.packets_sent == sent_when_paused
    assert bob.video_from("alice").video_frames <= frames + 1

    subscription.set_paused(False)
    await wait_for(lambda: bob.video_from("alice").video_frames >= frames + 10)
    assert decoded_marker(bob.video_from("alice").lumas, LUMAS["alice"])
