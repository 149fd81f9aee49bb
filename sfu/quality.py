"""Connection quality on LiveKit's scale (EXCELLENT / GOOD / POOR / LOST) from loss, jitter, RTT.

The score follows the simplified E-model LiveKit's server uses (``pkg/sfu/connectionquality``),
so that clients see the same judgement they would from a LiveKit server:

- effective delay ``d`` = RTT / 2 + 2 x jitter, in milliseconds; it costs ``d / 40`` points up
  to 160 ms and ``(d - 120) / 10`` beyond, where conversation starts to suffer;
- loss costs its percentage times a weight: 10 for video (no codec repair), 8 for Opus, 8 / 1.5
  with Opus in-band FEC; so video falls to GOOD at 2 % loss and to POOR at 6 %, Opus at 2.5 %
  and 7.5 %;
- score = 100 minus both, floored at 0; above 80 is EXCELLENT, above 40 GOOD, else POOR;
- a window in which packets were expected but none arrived is LOST.

A participant's quality is the worst of its streams' (:func:`worst`). :class:`QualityTracker`
smooths the score over windows (quicker down than up) so that one bad second does not flip a
client's indicator.

Wiring: every few seconds per stream, count the window's expected and lost packets (the
publisher's upstream from our receive statistics, a subscriber's downstream from its receiver
reports), with the jitter and RTT seen; feed a tracker; send ``connection_quality_update`` when
a participant's worst quality changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
import enum

VIDEO_LOSS_WEIGHT = 10.0
OPUS_LOSS_WEIGHT = 8.0
OPUS_FEC_LOSS_WEIGHT = OPUS_LOSS_WEIGHT / 1.5

EXCELLENT_ABOVE = 80.0
GOOD_ABOVE = 40.0


class ConnectionQuality(enum.IntEnum):
    """Ordered worst first, so that ``min`` picks the worst."""

    LOST = 0
    POOR = 1
    GOOD = 2
    EXCELLENT = 3


@dataclass(frozen=True, slots=True)
class WindowStats:
    """One stream over one scoring window."""

    packets_expected: int
    packets_lost: int
    jitter: float = 0.0
    """Seconds."""
    rtt: float = 0.0
    """Seconds."""

    def __post_init__(self) -> None:
        if self.packets_expected < 0 or self.packets_lost < 0 or self.jitter < 0 or self.rtt < 0:
            raise ValueError(f"negative window statistics: {self}")


def loss_weight(codec: str, fec: bool = False) -> float:
    """Loss weight for a MIME type such as ``video/VP8`` or ``audio/opus``."""
    codec = codec.lower()
    if codec.startswith("video/"):
        return VIDEO_LOSS_WEIGHT
    if codec == "audio/opus":
        return OPUS_FEC_LOSS_WEIGHT if fec else OPUS_LOSS_WEIGHT
    return OPUS_LOSS_WEIGHT


def score(stats: WindowStats, weight: float) -> float:
    """0 (unusable) .. 100 (perfect); see the module docstring."""
    delay = stats.rtt * 1000.0 / 2.0 + stats.jitter * 1000.0 * 2.0
    delay_effect = delay / 40.0 if delay <= 160.0 else (delay - 120.0) / 10.0
    lost = min(stats.packets_lost, stats.packets_expected)
    loss_percent = 100.0 * lost / stats.packets_expected if stats.packets_expected else 0.0
    return max(100.0 - delay_effect - loss_percent * weight, 0.0)


def quality(value: float) -> ConnectionQuality:
    """The LiveKit level of a score."""
    if value > EXCELLENT_ABOVE:
        return ConnectionQuality.EXCELLENT
    if value > GOOD_ABOVE:
        return ConnectionQuality.GOOD
    return ConnectionQuality.POOR


def rate(stats: WindowStats, weight: float) -> ConnectionQuality:
    """One window's quality, without smoothing."""
    if stats.packets_expected > 0 and stats.packets_lost >= stats.packets_expected:
        return ConnectionQuality.LOST
    return quality(score(stats, weight))


def worst(qualities: Iterable[ConnectionQuality]) -> ConnectionQuality:
    """A participant's quality from its streams' (EXCELLENT when it has none to judge)."""
    return min(qualities, default=ConnectionQuality.EXCELLENT)


class QualityTracker:
    """One stream's smoothed score: falls with weight 0.7 per window, recovers with 0.4."""

    def __init__(self, weight: float, fall: float = 0.7, rise: float = 0.4) -> None:
        self._weight = weight
        self._fall = fall
        self._rise = rise
        self._score = 100.0
        self._lost = False

    @property
    def quality(self) -> ConnectionQuality:
        return ConnectionQuality.LOST if self._lost else quality(self._score)

    def update(self, stats: WindowStats) -> ConnectionQuality:
        """Add one window; a window without expected packets (muted, idle) changes nothing."""
        if stats.packets_expected == 0:
            return self.quality
        self._lost = stats.packets_lost >= stats.packets_expected
        new = score(stats, self._weight)
        factor = self._fall if new < self._score else self._rise
        self._score = factor * new + (1.0 - factor) * self._score
        return self.quality
