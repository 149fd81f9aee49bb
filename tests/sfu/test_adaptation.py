"""Bandwidth adaptation wired to real transports and subscriptions, on simulated time.

The conference's own periodic round is slowed to once an hour so that only the test's ticks
(with simulated ``now``) act. A simulcast camera is fed hand-made packets (as in
``test_simulcast``); subscribers' feedback goes into their transports' estimators.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
import time

from aiortc import RTCPeerConnection
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, RtcpReceiverInfo, pack_remb_fci
from sfu_peers import started_sfu
from test_simulcast import REPAIRED_ID, RID_ID, Publisher
import pytest

from sfu import (
    SFU,
    ConnectionQuality,
    ConnectionQualityChanged,
    Event,
    StreamStateChanged,
    SubscribedLayersChanged,
    Subscription,
    TrackInfo,
    TrackKind,
    Transport,
    TransportRole,
)
from sfu.adaptation import Adaptation, RateMeter
from sfu.bandwidth import DownlinkEstimator
from sfu.conference import Conference
from sfu.simulcast import SimulcastOffer
from sfu.track import PublishedTrack

TICK = 0.5


@pytest.fixture(scope="module")
async def quiet_sfu() -> AsyncIterator[SFU]:
    async with started_sfu(adaptation_interval=3600.0) as server:
        yield server


@dataclass
class Call:
    conference: Conference
    camera: PublishedTrack
    adaptation: Adaptation
    events: list[Event]
    now: float = 0.0

    def transport(self, name: str) -> Transport:
        participant = self.conference.participant(name)
        assert participant is not None
        return participant.transports[0]

    def subscription(self, name: str) -> Subscription:
        participant = self.conference.participant(name)
        assert participant is not None
        found = participant.subscription_for("cam")
        assert found is not None
        return found

    def run(self, seconds: float, remb: dict[str, int]) -> list[Event]:
        """Ticks over ``seconds``; each subscriber reports its REMB and loss-free receiver
        reports once a second."""
        events: list[Event] = []
        for _ in range(int(seconds / TICK)):
            self.now += TICK
            if self.now % 1.0 == 0:
                for name, bitrate in remb.items():
                    self.transport(name).downlink.on_remb(bitrate, self.now)
                    self.transport(name).downlink.on_receiver_report(0, self.now, 100)
            events += self.adaptation.tick(
                self.conference.participants, [self.camera], None, self.now
            )
        return events


@pytest.fixture
async def call(quiet_sfu: SFU) -> AsyncIterator[Call]:
    events: list[Event] = []
    conference = quiet_sfu.create_conference(f"adapt-{time.monotonic()}", events.append)
    for name in ("bob", "carol"):
        conference.join(name).add_transport(TransportRole.SUBSCRIBER)
    pc = RTCPeerConnection()
    camera = PublishedTrack(
        TrackInfo("cam", "alice", TrackKind.VIDEO, "video/VP8", "1"),
        pc.addTransceiver("video").receiver,
        clock_rate=90000,
        rtx_payload_types={97: 96},
        audio_level_id=0,
        history_size=64,
        keyframe_interval=0.0,
        on_keyframe_request=lambda track_id, reason: None,
        on_audio_level=lambda participant, level, now: None,
        simulcast=SimulcastOffer(("q", "h", "f"), RID_ID, REPAIRED_ID),
    )
    conference._add_track(camera)  # as a publisher's transport would
    publisher = Publisher(camera)
    for rid in "qhf":
        publisher.key(rid)
    adaptation = Adaptation(conference.id, 3_000_000, downlink_floor=0)
    yield Call(conference, camera, adaptation, events)
    await quiet_sfu.close_conference(conference.id)
    await pc.close()


def states(events: list[Event]) -> list[tuple[str, bool]]:
    return [(e.participant_id, e.paused) for e in events if isinstance(e, StreamStateChanged)]


async def test_a_slow_subscriber_gets_a_lower_layer_and_is_paused_when_nothing_fits(
    call: Call,
) -> None:
    events = call.run(25.0, {"bob": 300_000, "carol": 5_000_000})
    # Carol's estimate grew on loss-free reports until the top layer fit; bob's REMB holds
    # him at the lowest layer (the next costs more than 90 % of 300 kbit/s).
    assert call.subscription("carol").wanted_layer() == 2
    assert call.subscription("bob").wanted_layer() == 0
    assert not states(events)

    events = call.run(2.0, {"bob": 50_000, "carol": 5_000_000})
    assert not states(events)  # delay alone only takes bob down to the lowest layer
    assert call.subscription("bob").wanted_layer() == 0
    call.subscription("bob").on_receiver_report(report(2000, 100, fraction_lost=64))
    events = call.run(1.0, {"bob": 50_000, "carol": 5_000_000})
    assert states(events) == [("bob", True)]
    assert call.subscription("bob").congested and not call.subscription("carol").congested

    # Back up only once the higher estimate has held for the allocator's hold time.
    call.subscription("bob").on_receiver_report(report(2100, 100))
    events = call.run(1.0, {"bob": 300_000, "carol": 5_000_000})
    assert not states(events)
    events = call.run(4.0, {"bob": 300_000, "carol": 5_000_000})
    assert states(events) == [("bob", False)]
    assert not call.subscription("bob").congested
    assert call.subscription("carol").wanted_layer() == 2


async def test_dynacast_disables_layers_nobody_watches(call: Call) -> None:
    call.run(25.0, {"bob": 300_000, "carol": 5_000_000})
    call.subscription("carol").set_paused(True)  # carol's tile is hidden
    events = call.run(4.0, {"bob": 300_000, "carol": 5_000_000})
    assert not [e for e in events if isinstance(e, SubscribedLayersChanged)]  # not yet
    events = call.run(2.0, {"bob": 300_000, "carol": 5_000_000})
    updates = [e for e in events if isinstance(e, SubscribedLayersChanged)]
    assert [(u.participant_id, u.track_id, u.enabled) for u in updates] == [
        ("alice", "cam", (True, False, False))
    ]
    call.subscription("carol").set_paused(False)  # a rise is announced at once
    events = call.run(TICK, {"bob": 300_000, "carol": 5_000_000})
    updates = [e for e in events if isinstance(e, SubscribedLayersChanged)]
    assert [u.enabled for u in updates] == [(True, True, True)]


def report(highest: int, lost: int, fraction_lost: int = 0) -> RtcpReceiverInfo:
    return RtcpReceiverInfo(
        ssrc=0,
        fraction_lost=fraction_lost,
        packets_lost=lost,
        highest_sequence=highest,
        jitter=90,
        lsr=0,
        dlsr=0,
    )


async def test_connection_quality_from_receiver_reports(call: Call) -> None:
    qualities = dict(
        pair
        for event in call.run(4.0, {})
        if isinstance(event, ConnectionQualityChanged)
        for pair in event.qualities
    )
    assert qualities == {"bob": ConnectionQuality.EXCELLENT, "carol": ConnectionQuality.EXCELLENT}
    bob, carol = call.subscription("bob"), call.subscription("carol")
    changes: list[tuple[str, ConnectionQuality]] = []
    for window in range(1, 5):
        bob.on_receiver_report(report(1000 + 100 * window, 30 * window))  # 30 % loss
        carol.on_receiver_report(report(1000 + 100 * window, 0))
        for event in call.run(2.0, {}):
            if isinstance(event, ConnectionQualityChanged):
                changes += event.qualities
    assert changes and changes[-1] == ("bob", ConnectionQuality.POOR)
    assert all(name == "bob" for name, _ in changes)


async def test_remb_and_receiver_reports_reach_the_estimator(call: Call) -> None:
    transport, subscription = call.transport("bob"), call.subscription("bob")

    def remb(bitrate: int) -> RtcpPsfbPacket:
        fci = pack_remb_fci(bitrate, [subscription.ssrc])
        return RtcpPsfbPacket(fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=fci)

    transport.downlink.on_sent(100_000, time.monotonic())  # 800 kbit/s sent...
    transport._on_rtcp(remb(700_000))
    transport._on_rtcp(remb(150_000))  # ...and the receiver's estimate falls to 150
    assert transport.bandwidth_estimate == 150_000
    assert transport.downlink.estimate(time.monotonic()) == 150_000


def test_rate_meter_smooths_and_keeps_the_last_rate_when_idle() -> None:
    meter = RateMeter()
    meter.update(0, 0.0)
    assert meter.rate is None
    meter.update(12_500, 1.0)  # 100 kbit/s
    assert meter.rate == 100_000
    meter.update(12_500 + 25_000, 2.0)  # 200 kbit/s: moves 30 % of the way
    assert meter.rate == pytest.approx(130_000)
    meter.update(12_500 + 25_000, 3.0)  # nothing new (a paused layer): the rate stays
    assert meter.rate == pytest.approx(130_000)


async def test_a_change_of_tile_is_allocated_at_once(call: Call) -> None:
    """The conference's own round (an hour apart here) runs when a subscriber changes what it
    views: an enlarged tile is not held at the small tile's layer until the next round."""
    call.transport("bob").downlink = DownlinkEstimator(initial=5_000_000)
    bob = call.conference.participant("bob")
    assert bob is not None
    subscription = call.subscription("bob")
    subscription.prefer_size(320, 180)
    bob.viewing_changed()
    assert subscription.max_layer == 0  # the allocation caps it at the small tile's layer
    subscription.prefer_size(1280, 720)
    assert subscription.wanted_layer() == 0  # until the layers are allocated again...
    bob.viewing_changed()
    assert subscription.wanted_layer() == 2  # ...which happened at once


def test_rate_meter_ignores_rounds_run_early() -> None:
    meter = RateMeter()
    meter.update(0, 0.0)
    meter.update(12_500, 1.0)  # 100 kbit/s
    meter.update(50_000, 1.05)  # a key frame 50 ms later: no rate of its own
    assert meter.rate == 100_000
    meter.update(50_000, 2.0)  # the next round measures from the previous one
    assert meter.rate == pytest.approx(100_000 + 0.3 * (300_000 - 100_000))


async def test_layer_costs_never_fall_with_the_layer(call: Call) -> None:
    costs = call.adaptation.layer_costs(call.camera)
    assert costs == (150_000, 500_000, 1_500_000)  # nothing measured yet: expected rates


async def test_the_subscriber_offer_asks_browsers_for_remb(call: Call) -> None:
    sdp = await call.transport("bob").create_offer()
    video = sdp[sdp.index("m=video") :]
    assert "goog-remb" in video
