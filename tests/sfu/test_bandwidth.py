"""Downlink estimation from synthetic REMB and receiver-report sequences, on simulated time."""

from __future__ import annotations

import pytest

from sfu.bandwidth import DownlinkEstimator


def lost(fraction: float) -> int:
    """The 8-bit ``fraction lost`` field of an RTCP report block."""
    return round(fraction * 256)


def test_starts_conservatively_and_remb_caps_at_once() -> None:
    est = DownlinkEstimator(initial=600_000)
    assert est.estimate(0.0) == 600_000
    est.on_remb(300_000, 0.1)
    assert est.estimate(0.1) == 300_000
    est.on_remb(5_000_000, 0.2)
    assert est.estimate(0.2) == 600_000  # REMB only caps; growth comes from good reports


def test_high_loss_cuts_by_half_the_loss_fraction() -> None:
    est = DownlinkEstimator(initial=1_000_000)
    est.on_receiver_report(lost(0.25), 1.0)
    est.on_receiver_report(lost(0.25), 2.0)  # closes the first packet's batch
    assert est.estimate(2.0) == pytest.approx(875_000, abs=1)
    assert est.estimate(2.1) == pytest.approx(765_625, abs=1)


def test_decrease_starts_from_the_remb_when_that_binds() -> None:
    est = DownlinkEstimator(initial=2_000_000)
    est.on_remb(1_000_000, 0.0)
    est.on_receiver_report(lost(0.5), 0.5)
    assert est.estimate(0.6) == 750_000
    est.on_remb(3_000_000, 1.0)
    assert est.estimate(1.0) == 750_000  # the loss-based rate now binds


def test_loss_after_the_remb_reacted_does_not_cut_below_what_got_through() -> None:
    est = DownlinkEstimator(initial=3_000_000)
    for i in range(100):  # 2 Mbit/s for a second
        est.on_sent(2500, i * 0.01)
    est.on_remb(400_000, 1.0)  # the receiver saw the queue grow...
    est.on_receiver_report(lost(0.7), 1.0)  # ...and the loss of that second arrives with it
    assert est.estimate(1.1) == 400_000  # 30 % of 2 Mbit/s got through: 600 kbit/s

    no_throughput = DownlinkEstimator(initial=3_000_000)
    no_throughput.on_remb(400_000, 1.0)
    no_throughput.on_receiver_report(lost(0.7), 1.0)
    assert no_throughput.estimate(1.1) == pytest.approx(260_000, abs=1_000)


def test_moderate_loss_holds_and_low_loss_grows_once_per_interval() -> None:
    est = DownlinkEstimator(initial=1_000_000, increase_interval=1.0)
    for i in range(10):
        est.on_receiver_report(lost(0.05), i * 0.1)
    assert est.estimate(1.0) == 1_000_000
    for i in range(10):  # five reports a second for two seconds
        est.on_receiver_report(0, 1.0 + i * 0.2)
    # a fresh downlink grows by half per good interval
    assert est.estimate(3.0) == pytest.approx(1_000_000 * 1.5**2 + 1_000 * 1.5 + 1_000, abs=2)


def test_growth_is_careful_once_the_downlink_was_congested() -> None:
    est = DownlinkEstimator(initial=1_000_000, increase_interval=1.0)
    est.on_receiver_report(lost(0.2), 0.0)
    est.on_receiver_report(0, 1.0)  # closes the lossy batch: cut by 10 %
    cut = est.estimate(1.0)
    assert cut == pytest.approx(900_000, abs=1_000)
    est.on_receiver_report(0, 2.0)
    est.on_receiver_report(0, 3.0)
    grown = cut * 1.08**3 + 1_000 * (1.08**2 + 1.08 + 1)  # the good reports of 1, 2 and 3 s
    assert est.estimate(3.1) == pytest.approx(grown, abs=10)


def test_report_blocks_of_one_packet_are_weighted_by_packets() -> None:
    quiet_audio_is_lossy = DownlinkEstimator(initial=1_000_000)
    quiet_audio_is_lossy.on_receiver_report(lost(0.5), 1.0, packets=10)
    quiet_audio_is_lossy.on_receiver_report(0, 1.0, packets=990)
    assert quiet_audio_is_lossy.estimate(1.1) > 1_000_000

    video_is_lossy = DownlinkEstimator(initial=1_000_000)
    video_is_lossy.on_receiver_report(0, 1.0, packets=50)
    video_is_lossy.on_receiver_report(lost(0.3), 1.0, packets=950)
    assert video_is_lossy.estimate(1.1) < 900_000


def test_blocks_without_packets_are_ignored() -> None:
    est = DownlinkEstimator(initial=1_000_000)
    est.on_receiver_report(255, 1.0, packets=0)
    assert est.estimate(2.0) == 1_000_000


def test_bounds_hold_under_any_feedback() -> None:
    est = DownlinkEstimator(initial=500_000, minimum=150_000, maximum=2_000_000)
    for i in range(50):
        est.on_receiver_report(255, float(i))
    assert est.estimate(60.0) == 150_000
    est.on_remb(0, 61.0)
    assert est.estimate(61.0) == 150_000
    est.on_remb(100_000_000, 62.0)
    for i in range(100):
        est.on_receiver_report(0, 63.0 + i)
    assert est.estimate(200.0) == 2_000_000


def test_estimate_decays_while_sending_into_silence() -> None:
    est = DownlinkEstimator(initial=2_000_000, feedback_timeout=3.0, decay_half_life=2.0)
    est.on_remb(2_000_000, 0.0)
    t = 0.0
    while t < 7.0:  # sending, no feedback after t=0
        est.on_sent(1200, t)
        t = round(t + 0.01, 2)
    assert est.estimate(3.0) == 2_000_000
    assert est.estimate(5.0) == pytest.approx(1_000_000, rel=0.01)
    assert est.estimate(7.0) == pytest.approx(500_000, rel=0.02)
    # feedback again: the decayed value is where growth starts from
    est.on_remb(2_000_000, 7.0)
    est.on_receiver_report(0, 7.0)
    assert est.estimate(7.1) == pytest.approx(500_000 * 1.08 + 1_000, rel=0.02)


def test_no_decay_while_nothing_is_sent() -> None:
    est = DownlinkEstimator(initial=1_000_000, feedback_timeout=3.0)
    est.on_sent(1200, 0.0)
    est.on_receiver_report(lost(0.05), 0.5)
    assert est.estimate(100.0) == 1_000_000


def test_send_rate_over_the_window() -> None:
    est = DownlinkEstimator(rate_window=1.0)
    for i in range(100):  # 100 packets of 1250 bytes in one second: 1 Mbit/s
        est.on_sent(1250, i * 0.01)
    assert est.send_rate(0.995) == 1_000_000
    assert est.send_rate(1.505) == 490_000
    assert est.send_rate(3.0) == 0


@pytest.mark.parametrize(
    ("call", "args"),
    [
        ("on_remb", (-1, 0.0)),
        ("on_receiver_report", (256, 0.0)),
        ("on_receiver_report", (-1, 0.0)),
    ],
)
def test_bad_feedback_is_refused_and_harms_nothing(call: str, args: tuple[int, float]) -> None:
    est = DownlinkEstimator(initial=700_000)
    with pytest.raises(ValueError):
        getattr(est, call)(*args)
    assert est.estimate(1.0) == 700_000


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        DownlinkEstimator(initial=50_000, minimum=100_000)


def test_a_remb_lagging_a_step_up_is_not_congestion() -> None:
    """The SFU switched to a layer three times the rate; the receiver's REMB, at 1.5 times
    what it received before, rises towards the new rate over a few reports."""
    est = DownlinkEstimator(initial=2_000_000)
    est.on_congestion_remb(560_000, 0.0)
    for i in range(100):  # 1.5 Mbit/s for a second
        est.on_sent(1875, 0.01 * i)
    for step, remb in enumerate((570_000, 620_000, 680_000, 740_000)):
        t = 1.0 + 0.25 * step
        est.on_sent(47_000, t)
        est.on_congestion_remb(remb, t)
        assert est.estimate(t) == 2_000_000
    est.on_congestion_remb(600_000, 2.0)  # now it falls, well below the rate: congestion
    assert est.estimate(2.0) == 600_000


def test_a_remb_without_probing_only_reports_congestion() -> None:
    est = DownlinkEstimator(initial=600_000)
    est.on_sent(100_000, 0.5)  # 800 kbit/s over the last second
    est.on_congestion_remb(750_000, 1.0)  # about what arrives: no sign of a queue
    assert est.estimate(1.0) == 600_000
    est.on_congestion_remb(300_000, 1.2)  # well below what is sent: queues grew
    assert est.estimate(1.2) == 300_000
    est.on_congestion_remb(900_000, 1.3)  # a higher one lifts nothing: growth is by reports
    assert est.estimate(1.3) == 300_000
    est.on_receiver_report(0, 2.5, packets=100)
    assert est.estimate(2.6) > 300_000
