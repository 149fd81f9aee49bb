"""The SFU's running totals, read as a metrics scrape reads them: they move with the media
and never go backwards when participants leave."""

from __future__ import annotations

from dataclasses import asdict
import asyncio

from aiortc.rtp import RtcpReceiverInfo
from sfu_peers import Room, wait_for

from sfu import SFU, MediaCounters, Subscription


def grown(before: MediaCounters, after: MediaCounters) -> dict[str, int]:
    return {key: value - asdict(before)[key] for key, value in asdict(after).items()}


async def test_totals_count_media_and_survive_leaving(sfu_server: SFU, room: Room) -> None:
    start = sfu_server.media_counters()
    alice, bob = room.add("alice"), room.add("bob")
    await alice.publish(luma=60, amplitude=0.1)
    await wait_for(lambda: bob.video_from("alice").video_frames >= 20)

    during = grown(start, sfu_server.media_counters())
    assert during["packets_in"] > 20
    assert during["bytes_in"] > 12 * during["packets_in"]
    assert during["packets_out"] > 20
    assert during["bytes_out"] > 12 * during["packets_out"]
    assert during["keyframe_requests_out"] >= 1  # bob waited for a key frame
    assert during["malformed_rtp"] == during["unknown_rtp"] == 0

    before_leaving = sfu_server.media_counters()
    await bob.close()
    leaving = asyncio.create_task(room.conference.remove("bob"))
    await asyncio.sleep(0)  # bob is off the list, his transports still closing
    assert room.conference.participant("bob") is None
    while_leaving = grown(before_leaving, sfu_server.media_counters())
    await leaving
    await alice.close()
    await room.conference.remove("alice")
    after = grown(before_leaving, sfu_server.media_counters())
    for totals in (while_leaving, after):
        assert all(value >= 0 for value in totals.values()), totals


def test_reported_loss_never_goes_back() -> None:
    """Receiver reports may lower the cumulative loss (duplicates); the count must not."""
    subscription = Subscription("bob", "bob#1", "video")
    for lost in (5, 3, 8, 7):
        subscription.on_receiver_report(
            RtcpReceiverInfo(
                ssrc=1,
                fraction_lost=0,
                packets_lost=lost,
                highest_sequence=0,
                jitter=0,
                lsr=0,
                dlsr=0,
            )
        )
    totals = MediaCounters()
    totals.add_subscription(subscription)
    assert totals.lost_out == 8
