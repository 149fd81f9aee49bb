"""Sender-side delay-based bandwidth estimate from transport-wide feedback (GCC's trendline).

A queue building up at the bottleneck shows as packets arriving further apart than they were
sent. Packets sent within 5 ms form a group; each group's delay variation against the previous
one (arrival gap minus send gap) is accumulated, smoothed, and the slope of the last 20 points
over arrival time is the trend. The trend, scaled by the number of samples (at most 60) and a
gain of 4, is compared with a threshold that itself adapts (quicker towards small trends than
large ones, draft-ietf-rmcat-gcc-02 section 5.4), so that competing TCP flows do not starve us:

- above it for more than 10 ms and still rising: *overuse*, the rate drops to 85 % of what the
  receiver acknowledged over the last half second (at most once per ``decrease_interval``);
- below minus it: *underuse*, the queue drains, the rate holds;
- otherwise *normal*: the rate grows 8 % per second, but not beyond 1.5 times the acknowledged
  rate, so it never runs far ahead of what the path has shown it carries.

The result is a delay-based estimate, fed into
:meth:`sfu.bandwidth.DownlinkEstimator.on_remb` like a REMB (which is the receiver's version of
the same estimate). Times are seconds; ``now`` is a parameter.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
import enum

from .twcc import PacketSample

_BURST = 0.005
_WINDOW = 20
_SMOOTHING = 0.9
_GAIN = 4.0
_MAX_DELTAS = 60
_OVERUSE_TIME = 0.010
_K_UP = 0.0087
_K_DOWN = 0.039
_MAX_ADAPT_OFFSET = 15.0
_THRESHOLD_BOUNDS = (6.0, 600.0)
_GROWTH = 1.08
_BACKOFF = 0.85


class Usage(enum.StrEnum):
    NORMAL = "normal"
    OVERUSE = "overuse"
    UNDERUSE = "underuse"


@dataclass(slots=True)
class _Group:
    first_send: float
    last_send: float
    arrival: float


class DelayBasedEstimator:
    """bit/s the path carries without queueing, judged from packet arrival times."""

    def __init__(
        self,
        initial: int = 600_000,
        minimum: int = 100_000,
        maximum: int = 20_000_000,
        decrease_interval: float = 0.2,
        acked_window: float = 0.5,
    ) -> None:
        if not 0 < minimum <= initial <= maximum:
            raise ValueError("need 0 < minimum <= initial <= maximum")
        self._minimum = minimum
        self._maximum = maximum
        self._decrease_interval = decrease_interval
        self._acked_window = acked_window
        self._rate = float(initial)
        self._last_update: float | None = None
        self._last_decrease = -float("inf")
        self._group: _Group | None = None
        self._previous: _Group | None = None
        self._deltas = 0
        self._accumulated = 0.0
        self._smoothed = 0.0
        self._points: deque[tuple[float, float]] = deque(maxlen=_WINDOW)
        self._trend = 0.0
        self._threshold = 12.5
        self._threshold_time: float | None = None
        self._overuse_time = 0.0
        self._overuse_count = 0
        self.usage = Usage.NORMAL
        self._acked: deque[tuple[float, int]] = deque()
        self._acked_bytes = 0
        self._newest_arrival = -float("inf")

    def estimate(self) -> int:
        return int(self._rate)

    def acknowledged_rate(self) -> int | None:
        """bit/s the receiver got over the last ``acked_window`` of its clock (None: too few)."""
        if len(self._acked) < 2:
            return None
        return int(self._acked_bytes * 8 / self._acked_window)

    def on_feedback(self, samples: Sequence[PacketSample], now: float) -> None:
        """One feedback's packets (in sequence order, as :meth:`SendHistory.match` returns)."""
        for sample in samples:
            if sample.arrival is None:
                continue
            self._acknowledge(sample.arrival, sample.size)
            self._add(sample.send_time, sample.arrival)
        self._control(now)

    # ------------------------------------------------------------------ arrival groups

    def _acknowledge(self, arrival: float, size: int) -> None:
        self._acked.append((arrival, size))
        self._acked_bytes += size
        self._newest_arrival = max(self._newest_arrival, arrival)
        horizon = self._newest_arrival - self._acked_window
        while self._acked and self._acked[0][0] <= horizon:
            self._acked_bytes -= self._acked.popleft()[1]

    def _add(self, send: float, arrival: float) -> None:
        group = self._group
        if group is None:
            self._group = _Group(send, send, arrival)
            return
        if send < group.first_send:
            return  # reordered from before the current group: its gap is already counted
        if send - group.first_send <= _BURST:
            group.last_send = max(group.last_send, send)
            group.arrival = max(group.arrival, arrival)
            return
        if self._previous is not None:
            self._on_group_delta(
                group.last_send - self._previous.last_send,
                group.arrival - self._previous.arrival,
                group.arrival,
            )
        self._previous = group
        self._group = _Group(send, send, arrival)

    def _on_group_delta(self, send_delta: float, arrival_delta: float, arrival: float) -> None:
        self._deltas = min(self._deltas + 1, _MAX_DELTAS)
        self._accumulated += (arrival_delta - send_delta) * 1000.0
        self._smoothed = _SMOOTHING * self._smoothed + (1.0 - _SMOOTHING) * self._accumulated
        self._points.append((arrival * 1000.0, self._smoothed))
        previous_trend = self._trend
        if len(self._points) == _WINDOW:
            self._trend = _slope(self._points, previous_trend)
        self._detect(previous_trend, send_delta * 1000.0, arrival * 1000.0)

    def _detect(self, previous_trend: float, send_delta_ms: float, now_ms: float) -> None:
        modified = self._deltas * self._trend * _GAIN
        if modified > self._threshold:
            self._overuse_time += send_delta_ms / 1000.0
            self._overuse_count += 1
            if (
                self._overuse_time > _OVERUSE_TIME
                and self._overuse_count > 1
                and self._trend >= previous_trend
            ):
                self._overuse_time, self._overuse_count = 0.0, 0
                self.usage = Usage.OVERUSE
        else:
            self._overuse_time, self._overuse_count = 0.0, 0
            self.usage = Usage.UNDERUSE if modified < -self._threshold else Usage.NORMAL
        self._adapt_threshold(abs(modified), now_ms)

    def _adapt_threshold(self, modified: float, now_ms: float) -> None:
        last = self._threshold_time if self._threshold_time is not None else now_ms
        self._threshold_time = now_ms
        if modified > self._threshold + _MAX_ADAPT_OFFSET:
            return  # a spike (e.g. a route change) should not drag the threshold along
        k = _K_DOWN if modified < self._threshold else _K_UP
        elapsed = min(max(now_ms - last, 0.0), 100.0)
        self._threshold += k * (modified - self._threshold) * elapsed
        low, high = _THRESHOLD_BOUNDS
        self._threshold = min(max(self._threshold, low), high)

    # ------------------------------------------------------------------ rate control

    def _control(self, now: float) -> None:
        elapsed = 0.0 if self._last_update is None else min(max(now - self._last_update, 0.0), 1.0)
        self._last_update = now
        acked = self.acknowledged_rate()
        if self.usage is Usage.OVERUSE:
            if acked is not None and now - self._last_decrease >= self._decrease_interval:
                self._rate = min(self._rate, _BACKOFF * acked)
                self._last_decrease = now
        elif self.usage is Usage.NORMAL:
            grown = self._rate * _GROWTH**elapsed
            if acked is not None:
                cap = 1.5 * acked + 10_000
                if grown > cap:
                    grown = max(self._rate, cap)
            self._rate = grown
        self._rate = min(max(self._rate, self._minimum), self._maximum)


def _slope(points: Sequence[tuple[float, float]], fallback: float) -> float:
    """Least-squares slope of delay over arrival time."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    numerator = sum((x - mean_x) * (y - mean_y) for x, y in points)
    denominator = sum((x - mean_x) ** 2 for x, _ in points)
    return numerator / denominator if denominator else fallback
