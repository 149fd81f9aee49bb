"""Connection quality scoring: LiveKit's thresholds, smoothing, the worst stream wins."""

from __future__ import annotations

import pytest

from sfu.quality import (
    OPUS_FEC_LOSS_WEIGHT,
    OPUS_LOSS_WEIGHT,
    VIDEO_LOSS_WEIGHT,
    ConnectionQuality,
    QualityTracker,
    WindowStats,
    loss_weight,
    rate,
    score,
    worst,
)

EXCELLENT, GOOD, POOR, LOST = (
    ConnectionQuality.EXCELLENT,
    ConnectionQuality.GOOD,
    ConnectionQuality.POOR,
    ConnectionQuality.LOST,
)


def window(loss_percent: float = 0.0, jitter: float = 0.0, rtt: float = 0.0) -> WindowStats:
    return WindowStats(10_000, round(loss_percent * 100), jitter, rtt)


@pytest.mark.parametrize(
    ("stats", "weight", "expected"),
    [
        (window(), VIDEO_LOSS_WEIGHT, EXCELLENT),
        # video: GOOD from 2 % loss, POOR from 6 %
        (window(1.9), VIDEO_LOSS_WEIGHT, EXCELLENT),
        (window(2.0), VIDEO_LOSS_WEIGHT, GOOD),
        (window(5.9), VIDEO_LOSS_WEIGHT, GOOD),
        (window(6.0), VIDEO_LOSS_WEIGHT, POOR),
        # Opus: 2.5 % and 7.5 %; with FEC 3.75 % and 11.25 %
        (window(2.4), OPUS_LOSS_WEIGHT, EXCELLENT),
        (window(2.5), OPUS_LOSS_WEIGHT, GOOD),
        (window(7.5), OPUS_LOSS_WEIGHT, POOR),
        (window(3.7), OPUS_FEC_LOSS_WEIGHT, EXCELLENT),
        (window(11.2), OPUS_FEC_LOSS_WEIGHT, GOOD),
        # delay: RTT 300 ms + jitter 20 ms -> 190 ms effective, 7 points: still EXCELLENT
        (window(rtt=0.3, jitter=0.02), VIDEO_LOSS_WEIGHT, EXCELLENT),
        # RTT 600 ms + jitter 100 ms -> 500 ms, 38 points: GOOD
        (window(rtt=0.6, jitter=0.1), VIDEO_LOSS_WEIGHT, GOOD),
        # RTT 1.2 s + jitter 200 ms -> 1 s, 88 points: POOR
        (window(rtt=1.2, jitter=0.2), VIDEO_LOSS_WEIGHT, POOR),
        # everything lost
        (WindowStats(50, 50), OPUS_LOSS_WEIGHT, LOST),
    ],
)
def test_levels(stats: WindowStats, weight: float, expected: ConnectionQuality) -> None:
    assert rate(stats, weight) == expected


def test_score_formula() -> None:
    assert score(window(), VIDEO_LOSS_WEIGHT) == 100.0
    assert score(window(rtt=0.16), VIDEO_LOSS_WEIGHT) == pytest.approx(98.0)  # 80 ms / 40
    assert score(window(rtt=0.4), VIDEO_LOSS_WEIGHT) == pytest.approx(92.0)  # (200 - 120) / 10
    assert score(window(3.0, rtt=0.16), VIDEO_LOSS_WEIGHT) == pytest.approx(68.0)
    assert score(window(50.0), VIDEO_LOSS_WEIGHT) == 0.0
    assert score(WindowStats(10, 20), VIDEO_LOSS_WEIGHT) == 0.0  # more lost than expected


def test_loss_weight_by_codec() -> None:
    assert loss_weight("video/VP8") == loss_weight("video/H264") == VIDEO_LOSS_WEIGHT
    assert loss_weight("audio/opus") == OPUS_LOSS_WEIGHT
    assert loss_weight("audio/opus", fec=True) == OPUS_FEC_LOSS_WEIGHT


def test_worst_stream_wins() -> None:
    assert worst([EXCELLENT, POOR, GOOD]) == POOR
    assert worst([GOOD, LOST]) == LOST
    assert worst([]) == EXCELLENT


def test_tracker_falls_fast_and_recovers_slowly() -> None:
    tracker = QualityTracker(VIDEO_LOSS_WEIGHT)
    assert tracker.quality == EXCELLENT
    # one window at 10 % loss (score 0) is enough to show it: 0.7 * 0 + 0.3 * 100 = 30...
    assert tracker.update(window(10.0)) == POOR
    recovering = [tracker.update(window()) for _ in range(4)]
    # ...but clean windows climb back through GOOD (58, 75) before EXCELLENT (85)
    assert recovering == [GOOD, GOOD, EXCELLENT, EXCELLENT]


def test_tracker_ignores_idle_windows_and_reports_lost() -> None:
    tracker = QualityTracker(OPUS_LOSS_WEIGHT)
    assert tracker.update(WindowStats(0, 0)) == EXCELLENT
    assert tracker.update(WindowStats(50, 50)) == LOST
    assert tracker.update(WindowStats(0, 0)) == LOST
    assert tracker.update(WindowStats(50, 0)) != LOST


def test_negative_statistics_are_refused() -> None:
    with pytest.raises(ValueError):
        WindowStats(10, -1)
    with pytest.raises(ValueError):
        WindowStats(10, 0, rtt=-0.1)
