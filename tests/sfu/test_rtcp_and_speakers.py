"""Keyframe requests, late joiners and active-speaker events with real aiortc peers."""

from __future__ import annotations

from typing import Any

from aiortc.rtp import RTCP_PSFB_PLI, RtcpPsfbPacket
from sfu_peers import Room, wait_for

from sfu import KeyframeRequested, SpeakersChanged


def count_plis(sender: Any) -> list[int]:
    """Count PLIs reaching a client's video sender (test-only aiortc tap)."""
    count = [0]
    original = sender._handle_rtcp_packet

    async def handle(packet: Any) -> None:
        if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_PLI:
            count[0] += 1
        await original(packet)

    sender._handle_rtcp_packet = handle
    return count


async def test_subscriber_pli_reaches_publisher_rate_limited(room: Room) -> None:
    alice, bob = room.add("alice"), room.add("bob")
    await alice.publish(luma=60)
    plis = count_plis(alice.pub_pc.getTransceivers()[0].sender)
    await wait_for(lambda: bob.video_from("alice").video_frames >= 5)

    def pli_requests() -> list[KeyframeRequested]:
        return [e for e in room.events_of(KeyframeRequested) if "PLI" in e.reason]

    await wait_for(lambda: plis[0] >= 1 and not alice_pending(room))
    before = plis[0]
    receiver: Any = next(t.receiver for t in bob.sub_pc.getTransceivers() if t.kind == "video")
    ssrc = bob.participant.subscriptions[0].ssrc
    for _ in range(10):  # a burst: the SFU forwards at most one per interval
        await receiver._send_rtcp_pli(ssrc)
    await wait_for(lambda: len(pli_requests()) >= 1 and plis[0] > before)
    assert len(pli_requests()) < 10
    assert plis[0] - before < 10


def alice_pending(room: Room) -> bool:
    """Whether a deferred key-frame request of alice's video is still queued."""
    return room.conference.published_track("alice-video").layers[0]._pending_request is not None


async def test_late_joiner_gets_a_decodable_keyframe(room: Room) -> None:
    alice = room.add("alice")
    await alice.publish(luma=90, amplitude=0.1)
    plis = count_plis(alice.pub_pc.getTransceivers()[1].sender)
    bob = room.add("bob")  # joins after alice published: gated until a key frame
    await wait_for(lambda: bob.video_from("alice").video_frames >= 3)
    assert plis[0] >= 1  # the SFU asked alice for the key frame bob started from
    assert abs(bob.video_from("alice").lumas[0] - 90) < 12  # and it decoded correctly


async def test_loudest_participant_becomes_active_speaker(room: Room) -> None:
    loud, quiet, silent = room.add("loud"), room.add("quiet"), room.add("silent")
    await loud.publish(amplitude=0.8)
    await quiet.publish(amplitude=0.02)
    await silent.publish(amplitude=0.0)

    def dominant() -> str | None:
        changes = room.events_of(SpeakersChanged)
        return changes[-1].dominant if changes else None

    await wait_for(lambda: dominant() == "loud")
    speaking = {s.participant_id for s in room.events_of(SpeakersChanged)[-1].speakers if s.active}
    assert "silent" not in speaking

    assert loud.audio is not None and quiet.audio is not None
    loud.audio.amplitude, quiet.audio.amplitude = 0.0, 0.8
    await wait_for(lambda: dominant() == "quiet")
    assert any(e.dominant_changed for e in room.events_of(SpeakersChanged)[-3:])
