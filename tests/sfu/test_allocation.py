"""Layer allocation per subscriber: spending order, hysteresis, pause/resume, on simulated time;
and the allocator driven by the downlink estimator over a simulated link."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from sfu.allocation import Allocation, Allocator, StreamDemand, StreamKind, StreamState
from sfu.bandwidth import DownlinkEstimator

AUDIO_BITRATE = 32_000
CAMERA = (150_000, 450_000, 1_700_000)
SCREEN = (200_000, 1_500_000)


def audio(sid: str, enabled: bool = True) -> StreamDemand:
    return StreamDemand(sid, StreamKind.AUDIO, (AUDIO_BITRATE,), 0 if enabled else None)


def camera(sid: str, max_layer: int | None = 2, speaker: bool = False) -> StreamDemand:
    return StreamDemand(sid, StreamKind.VIDEO, CAMERA, max_layer, speaker)


def conference(with_screen: bool = True) -> list[StreamDemand]:
    """Three remote participants; b speaks; the list order is the order the adapter ranks."""
    streams = [audio("a-b"), audio("a-c"), audio("a-d")]
    streams += [camera("cam-c"), camera("cam-d"), camera("cam-b", speaker=True)]
    if with_screen:
        streams.append(StreamDemand("screen", StreamKind.SCREEN_SHARE, SCREEN, 1))
    return streams


def layers(allocation: Allocation) -> dict[str, int | None]:
    return dict(allocation.layers)


AUDIO_TOTAL = 3 * AUDIO_BITRATE


@pytest.mark.parametrize(
    ("estimate", "expected"),
    [
        # all wanted layers fit
        (10_000_000, {"screen": 1, "cam-b": 2, "cam-c": 2, "cam-d": 2}),
        # screen share's second layer before any camera's second one
        (AUDIO_TOTAL + 200_000 + 1_300_000 + 450_000, {"screen": 1, "cam-b": 0, "cam-c": 0}),
        # every video low before any medium; then the speaker's medium first
        (AUDIO_TOTAL + 200_000 + 450_000 + 300_000, {"screen": 0, "cam-b": 1, "cam-c": 0}),
        # not every video fits even low: the least important (last in order) is paused
        (AUDIO_TOTAL + 200_000 + 300_000, {"screen": 0, "cam-b": 0, "cam-c": 0, "cam-d": None}),
        (AUDIO_TOTAL + 200_000 + 300_000 - 1, {"cam-b": 0, "cam-c": None, "cam-d": None}),
        # only audio
        (AUDIO_TOTAL + 100_000, {"screen": None, "cam-b": None, "cam-c": None}),
        # audio is forwarded even when the estimate does not cover it
        (10_000, {"a-b": 0, "a-c": 0, "a-d": 0, "screen": None}),
    ],
)
def test_spending_order(estimate: int, expected: dict[str, int | None]) -> None:
    allocation = Allocator(usable=1.0).allocate(estimate, conference(), 0.0)
    got = layers(allocation)
    assert {sid: got[sid] for sid in expected} == expected
    assert got["a-b"] == got["a-c"] == got["a-d"] == 0
    assert allocation.used <= max(estimate, AUDIO_TOTAL)
    assert allocation.paused == {sid for sid, layer in got.items() if layer is None}
    assert allocation.state_changes == dict.fromkeys(allocation.paused, StreamState.PAUSED)


def test_wanted_layers_are_respected_and_disabled_streams_are_not_paused() -> None:
    streams = [
        audio("a-b", enabled=False),
        camera("small", max_layer=0),
        camera("too-high", max_layer=7),
        camera("hidden", max_layer=None),
    ]
    allocation = Allocator().allocate(10_000_000, streams, 0.0)
    assert layers(allocation) == {"a-b": None, "small": 0, "too-high": 2, "hidden": None}
    assert allocation.paused == frozenset() and allocation.state_changes == {}
    assert allocation.used == allocation.wanted == 150_000 + 1_700_000


def test_steps_down_at_once_and_up_when_the_rise_has_held() -> None:
    allocator = Allocator(up_hold=3.0, usable=1.0)
    streams = [camera("cam")]
    assert layers(allocator.allocate(2_000_000, streams, 0.0)) == {"cam": 2}
    assert layers(allocator.allocate(500_000, streams, 1.0)) == {"cam": 1}
    assert layers(allocator.allocate(2_000_000, streams, 2.0)) == {"cam": 1}
    assert layers(allocator.allocate(2_000_000, streams, 4.9)) == {"cam": 1}
    assert layers(allocator.allocate(2_000_000, streams, 5.0)) == {"cam": 2}

    down = allocator.allocate(100_000, streams, 20.0)
    assert layers(down) == {"cam": None}
    assert down.state_changes == {"cam": StreamState.PAUSED}
    held = [allocator.allocate(2_000_000, streams, t) for t in (21.0, 22.0, 23.9)]
    assert all(a.layers == {"cam": None} and a.state_changes == {} for a in held)
    resumed = allocator.allocate(2_000_000, streams, 24.0)
    assert layers(resumed) == {"cam": 2}
    assert resumed.state_changes == {"cam": StreamState.ACTIVE}


def test_a_partial_rise_allows_what_it_covers() -> None:
    allocator = Allocator(up_hold=3.0, usable=1.0)
    streams = [camera("cam")]
    allocator.allocate(100_000, streams, 0.0)
    allocator.allocate(500_000, streams, 1.0)
    allocator.allocate(2_000_000, streams, 2.0)
    assert layers(allocator.allocate(2_000_000, streams, 3.9)) == {"cam": None}
    assert layers(allocator.allocate(2_000_000, streams, 4.0)) == {"cam": 1}
    assert layers(allocator.allocate(2_000_000, streams, 5.0)) == {"cam": 2}


def test_headroom_must_hold_without_a_dip() -> None:
    allocator = Allocator(up_hold=3.0, usable=1.0)
    streams = [camera("cam")]
    allocator.allocate(500_000, streams, 0.0)
    allocator.allocate(2_000_000, streams, 1.0)
    allocator.allocate(500_000, streams, 2.0)  # the headroom vanished for a moment
    assert layers(allocator.allocate(2_000_000, streams, 4.0)) == {"cam": 1}
    assert layers(allocator.allocate(2_000_000, streams, 6.9)) == {"cam": 1}
    assert layers(allocator.allocate(2_000_000, streams, 7.0)) == {"cam": 2}


def test_a_step_up_the_link_cannot_carry_doubles_the_wait_for_the_next() -> None:
    allocator = Allocator(up_hold=3.0, usable=1.0, max_hold=12.0)
    streams = [camera("cam")]
    allocator.allocate(500_000, streams, 0.0)
    allocator.allocate(2_000_000, streams, 1.0)
    assert layers(allocator.allocate(2_000_000, streams, 4.0)) == {"cam": 2}
    assert layers(allocator.allocate(500_000, streams, 5.0)) == {"cam": 1}  # it failed
    assert layers(allocator.allocate(2_000_000, streams, 6.0)) == {"cam": 1}
    assert layers(allocator.allocate(2_000_000, streams, 11.9)) == {"cam": 1}  # 3 s are not
    assert layers(allocator.allocate(2_000_000, streams, 12.0)) == {"cam": 2}  # 6 s are
    assert layers(allocator.allocate(500_000, streams, 13.0)) == {"cam": 1}  # failed again
    assert layers(allocator.allocate(2_000_000, streams, 13.5)) == {"cam": 1}
    assert layers(allocator.allocate(2_000_000, streams, 25.4)) == {"cam": 1}
    assert layers(allocator.allocate(2_000_000, streams, 25.5)) == {"cam": 2}  # 12 s, at most
    assert layers(allocator.allocate(2_000_000, streams, 35.5)) == {"cam": 2}  # it lasted
    assert layers(allocator.allocate(500_000, streams, 40.0)) == {"cam": 1}
    assert layers(allocator.allocate(2_000_000, streams, 40.5)) == {"cam": 1}
    assert layers(allocator.allocate(2_000_000, streams, 43.5)) == {"cam": 2}  # 3 s again


def test_a_step_down_long_after_a_step_up_is_no_failed_try() -> None:
    allocator = Allocator(up_hold=3.0, usable=1.0, trial=10.0)
    streams = [camera("cam")]
    allocator.allocate(500_000, streams, 0.0)
    allocator.allocate(2_000_000, streams, 0.5)
    assert layers(allocator.allocate(2_000_000, streams, 3.5)) == {"cam": 2}
    assert layers(allocator.allocate(500_000, streams, 14.5)) == {"cam": 1}  # 11 s later
    allocator.allocate(2_000_000, streams, 15.0)
    assert layers(allocator.allocate(2_000_000, streams, 18.0)) == {"cam": 2}  # 3 s suffice


def test_demand_changes_under_a_steady_estimate_apply_at_once() -> None:
    allocator = Allocator(up_hold=3.0, usable=1.0)
    budget = 150_000 + 450_000
    quiet = [camera("cam-c", max_layer=1), camera("cam-b", max_layer=1)]
    assert layers(allocator.allocate(budget, quiet, 0.0)) == {"cam-c": 1, "cam-b": 0}
    speaking = [camera("cam-c", max_layer=1), camera("cam-b", max_layer=1, speaker=True)]
    assert layers(allocator.allocate(budget, speaking, 5.0)) == {"cam-c": 0, "cam-b": 1}
    hidden = [camera("cam-c", max_layer=None), camera("cam-b", max_layer=1, speaker=True)]
    assert layers(allocator.allocate(budget, hidden, 6.0)) == {"cam-c": None, "cam-b": 1}
    shown = [camera("cam-c", max_layer=1), camera("cam-b", max_layer=2, speaker=True)]
    assert layers(allocator.allocate(budget, shown, 6.5)) == {"cam-c": 0, "cam-b": 1}


def test_new_stream_starts_at_once_and_ranks_above_the_rest() -> None:
    allocator = Allocator(up_hold=3.0, usable=1.0)
    cams = [camera("cam-c", max_layer=1), camera("cam-d", max_layer=1)]
    assert layers(allocator.allocate(900_000, cams, 0.0)) == {"cam-c": 1, "cam-d": 1}
    share = StreamDemand("screen", StreamKind.SCREEN_SHARE, SCREEN, 1)
    allocation = allocator.allocate(900_000, [*cams, share], 1.0)
    assert layers(allocation) == {"screen": 0, "cam-c": 1, "cam-d": 0}
    assert allocation.state_changes == {}


def test_removed_streams_are_forgotten() -> None:
    allocator = Allocator(up_hold=3.0, usable=1.0)
    allocator.allocate(100_000, [camera("cam")], 0.0)
    assert allocator.allocate(100_000, [], 1.0).state_changes == {}
    back = allocator.allocate(2_000_000, [camera("cam")], 2.0)  # new again: no hold
    assert layers(back) == {"cam": 2} and back.state_changes == {}


def test_client_disabling_a_paused_stream_reports_it_active() -> None:
    allocator = Allocator(usable=1.0)
    allocator.allocate(100_000, [camera("cam")], 0.0)
    hidden = allocator.allocate(100_000, [camera("cam", max_layer=None)], 1.0)
    assert hidden.paused == frozenset()
    assert hidden.state_changes == {"cam": StreamState.ACTIVE}


def test_audio_reenabled_by_the_client_resumes_without_hold() -> None:
    allocator = Allocator(up_hold=3.0)
    allocator.allocate(1_000_000, [audio("a")], 0.0)
    allocator.allocate(1_000_000, [audio("a", enabled=False)], 1.0)
    assert layers(allocator.allocate(1_000_000, [audio("a")], 1.1)) == {"a": 0}


@pytest.mark.parametrize(
    "make",
    [
        lambda: StreamDemand("x", StreamKind.VIDEO, (), 0),
        lambda: StreamDemand("x", StreamKind.VIDEO, (100, -1), 0),
        lambda: StreamDemand("x", StreamKind.VIDEO, (100,), -1),
        lambda: Allocator(usable=0.0),
        lambda: Allocator(up_hold=3.0, max_hold=2.0),
    ],
)
def test_bad_input_is_refused(make: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        make()


def test_duplicate_stream_ids_are_refused_and_harm_nothing() -> None:
    allocator = Allocator(usable=1.0)
    allocator.allocate(2_000_000, [camera("cam")], 0.0)
    with pytest.raises(ValueError):
        allocator.allocate(2_000_000, [camera("cam"), camera("cam")], 1.0)
    assert layers(allocator.allocate(2_000_000, [camera("cam")], 2.0)) == {"cam": 2}


def test_a_falling_remb_steps_down_before_any_loss() -> None:
    estimator = DownlinkEstimator(initial=3_000_000)
    allocator = Allocator()
    streams = conference(with_screen=False)
    estimator.on_remb(3_000_000, 0.0)
    assert allocator.allocate(estimator.estimate(0.0), streams, 0.0).layers["cam-b"] == 2
    estimator.on_receiver_report(0, 1.0)
    estimator.on_remb(1_000_000, 1.0)  # delay grows at the receiver, nothing lost yet
    allocation = allocator.allocate(estimator.estimate(1.0), streams, 1.0)
    assert allocation.used <= 900_000
    assert layers(allocation) == {"a-b": 0, "a-c": 0, "a-d": 0, "cam-b": 1, "cam-c": 0, "cam-d": 0}


# ---------------------------------------------------------------------- closed loop


class Link:
    """A downlink of some capacity, and a receiver that reports on it once a second.

    The receiver's REMB stands in for a delay-based estimator: it reports the capacity, and
    85 % of it while the link is overused (queues grow). Loss is what exceeds the capacity.
    """

    def __init__(self, estimator: DownlinkEstimator) -> None:
        self.estimator = estimator
        self.capacity = 0
        self._bits = 0.0

    def send(self, bitrate: int, seconds: float, now: float) -> None:
        size = int(bitrate * seconds / 8)
        self.estimator.on_sent(size, now)
        self._bits += size * 8

    def report(self, seconds: float, now: float) -> None:
        sent = self._bits / seconds
        self._bits = 0.0
        loss = max(0.0, 1.0 - self.capacity / sent) if sent else 0.0
        remb = self.capacity * (0.85 if loss > 0 else 1.0)
        self.estimator.on_remb(int(remb), now)
        self.estimator.on_receiver_report(round(loss * 255), now, packets=int(sent / 9600))


def run(
    link: Link,
    allocator: Allocator,
    streams: Sequence[StreamDemand],
    start: float,
    end: float,
    history: list[tuple[float, Allocation]],
) -> None:
    """Ten allocations a second, sending what was allocated, a report every second."""
    tick = 0.1
    for step in range(round((end - start) / tick)):
        now = round(start + step * tick, 1)
        allocation = allocator.allocate(link.estimator.estimate(now), streams, now)
        history.append((now, allocation))
        link.send(allocation.used, tick, now)
        if step % 10 == 9:
            link.report(1.0, round(now + tick, 1))


def test_downlink_drop_and_recovery() -> None:
    estimator = DownlinkEstimator()
    allocator = Allocator(up_hold=3.0)
    link = Link(estimator)
    streams = conference(with_screen=False)
    history: list[tuple[float, Allocation]] = []

    link.capacity = 3_000_000
    run(link, allocator, streams, 0.0, 40.0, history)
    settled = layers(history[-1][1])
    assert settled == {"a-b": 0, "a-c": 0, "a-d": 0, "cam-b": 2, "cam-c": 1, "cam-d": 1}

    link.capacity = 400_000
    run(link, allocator, streams, 40.0, 80.0, history)
    after_drop = [(t, a) for t, a in history if t >= 40.0]
    # the first report after the drop takes everything the link cannot carry away
    first = next(t for t, a in after_drop if a.used <= link.capacity)
    assert first <= 41.1
    reduced = layers(history[-1][1])
    assert reduced == {"a-b": 0, "a-c": 0, "a-d": 0, "cam-b": 0, "cam-c": None, "cam-d": None}
    paused_at = {
        sid: t for t, a in after_drop for sid, s in a.state_changes.items() if s == "paused"
    }
    assert set(paused_at) == {"cam-c", "cam-d"} and max(paused_at.values()) <= 41.1
    # once settled, nothing flaps
    assert all(layers(a) == reduced for t, a in after_drop if t >= 45.0)

    link.capacity = 3_000_000
    run(link, allocator, streams, 80.0, 100.0, history)
    recovery = [(t, a) for t, a in history if t >= 80.0]
    resumed_at = {
        sid: t for t, a in recovery for sid, s in a.state_changes.items() if s == "active"
    }
    assert set(resumed_at) == {"cam-c", "cam-d"}
    assert all(t >= 83.0 for t in resumed_at.values())  # after the headroom held
    assert layers(history[-1][1]) == settled

    # audio was forwarded throughout
    assert all(a.layers[sid] == 0 for _, a in history for sid in ("a-b", "a-c", "a-d"))
