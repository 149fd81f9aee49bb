"""A subscriber's downlink bandwidth estimate, from the feedback its browser sends back.

aiortc neither estimates nor paces on the sending side, so the SFU owns this. Two signals are
combined, as in GCC (draft-ietf-rmcat-gcc-02, section 6), taking the lower of the two:

- REMB, the receiver's own delay-based estimate. Browsers send it when the SDP offers
  ``goog-remb`` and not ``transport-cc``, and they lower it when queueing delay grows, which
  is before loss builds up.
- A loss-based rate from the RTCP receiver reports of the streams sent to that subscriber:
  more than 10 % loss cuts it by half the loss fraction (but not below what demonstrably got
  through: the send rate times the fraction delivered), less than 2 % lets it grow at most
  once a second, and anything in between holds it.

It starts low (enough for audio and a camera's lowest layers) and grows only with good
reports: by half per report on a fresh downlink, as GCC's start phase does, so that a fast
link reaches the top layers within seconds; by 8 % once the downlink has shown congestion
(loss, a falling REMB, silence), so that what hurt it is retried carefully. While media is
being sent but the receiver stays silent, the estimate decays: silence means a dead or
saturated downlink.

Wiring: one estimator per subscriber transport; feed it the REMB bitrate returned by
:func:`sfu.rtcp.dispatch`, each RTCP report block about a stream sent to that subscriber, and
the bytes sent (per packet or per tick); read :meth:`DownlinkEstimator.estimate` when
allocating layers.
"""

from __future__ import annotations

from collections import deque
import math

_HIGH_LOSS = 0.10
_LOW_LOSS = 0.02
_FRESH_GROWTH = 1.5
"""Growth per good report until the downlink first shows congestion."""
_GROWTH = 1.08
"""Growth per good report after that."""
_CONGESTED = 0.9
"""A REMB below this share of the send rate reports congestion (see ``on_congestion_remb``)."""
_GROWTH_STEP = 1_000
"""bit/s added on each increase so that a rate near the minimum still moves."""


class DownlinkEstimator:
    """Estimated bit/s a subscriber's downlink carries. All methods take ``now`` in seconds."""

    def __init__(
        self,
        initial: int = 600_000,
        minimum: int = 100_000,
        maximum: int = 20_000_000,
        increase_interval: float = 1.0,
        feedback_timeout: float = 3.0,
        decay_half_life: float = 2.0,
        rate_window: float = 1.0,
    ) -> None:
        if not 0 < minimum <= initial <= maximum:
            raise ValueError("need 0 < minimum <= initial <= maximum")
        self._minimum = minimum
        self._maximum = maximum
        self._increase_interval = increase_interval
        self._feedback_timeout = feedback_timeout
        self._decay_half_life = decay_half_life
        self._rate_window = rate_window
        self._loss_rate = float(initial)
        self._remb: float | None = None
        self._last_congestion_remb: int | None = None
        self._congested = False
        """The downlink has shown congestion: growth is careful from then on."""
        self._last_increase = -math.inf
        self._heard: float | None = None
        """When the receiver was last heard from (or when sending started, before that)."""
        self._batch_time: float | None = None
        self._batch_lost = 0.0
        self._batch_packets = 0
        self._batch_sent = 0
        self._sent: deque[tuple[float, int]] = deque()
        self._sent_bytes = 0
        self._last_sent = -math.inf

    # ------------------------------------------------------------------ inputs

    def on_remb(self, bitrate: int, now: float) -> None:
        """A delay-based estimate (bit/s): the subscriber's REMB."""
        if bitrate < 0:
            raise ValueError(f"negative REMB bitrate {bitrate}")
        self._close_batch(now)
        self._hear(now)
        self._remb = float(bitrate)

    def on_congestion_remb(self, bitrate: int, now: float) -> None:
        """A REMB from a browser the SFU does not probe (no padding is sent to it).

        A browser's REMB never exceeds about 1.5 times what it receives and rises only a few
        per cent a second, so on a link carrying less than it could it shows no headroom, only
        congestion. A REMB below ``_CONGESTED`` times the send rate is congestion only when it
        *falls*: the receiver saw queues grow and cut its estimate. One that is below the send
        rate but holding or rising lags a step up the SFU just took (a layer switch can triple
        the rate at once) and is left to catch up; loss still tells if that step was too much.
        On congestion the rate drops to the REMB (growing again from there on good reports);
        otherwise a REMB is only a sign of life.
        """
        if bitrate < 0:
            raise ValueError(f"negative REMB bitrate {bitrate}")
        self._close_batch(now)
        self._hear(now)
        previous, self._last_congestion_remb = self._last_congestion_remb, bitrate
        falling = previous is not None and bitrate < previous
        if falling and bitrate < _CONGESTED * self.send_rate(now):
            self._loss_rate = float(self._bounded(min(self._loss_rate, bitrate)))
            self._congested = True

    def on_receiver_report(self, fraction_lost: int, now: float, packets: int = 1) -> None:
        """One RTCP report block about a stream sent to this subscriber.

        ``fraction_lost`` is the block's 8-bit field (lost / 256 since its previous report).
        The blocks of one RTCP packet (same ``now``) are averaged, each weighted by
        ``packets``: the packets sent on that stream since its previous report, when known, so
        that a lightly used audio stream does not outvote the video.
        """
        if not 0 <= fraction_lost <= 255:
            raise ValueError(f"fraction lost {fraction_lost} is not in 0..255")
        if packets < 0:
            raise ValueError(f"negative packet count {packets}")
        self._close_batch(now)
        self._hear(now)
        if self._batch_time is None:
            self._batch_time = now
            self._batch_sent = self.send_rate(now)
        self._batch_lost += fraction_lost / 256.0 * packets
        self._batch_packets += packets

    def on_sent(self, size: int, now: float) -> None:
        """``size`` bytes sent to this subscriber: one packet, or (cheaper on the forwarding
        path) the octets sent since the previous call, e.g. once per allocation tick."""
        if self._heard is None:
            self._heard = now
        self._last_sent = now
        self._sent.append((now, size))
        self._sent_bytes += size
        self._trim(now)

    # ------------------------------------------------------------------ outputs

    def estimate(self, now: float) -> int:
        """The downlink estimate in bit/s, within the configured bounds."""
        self._close_batch(now)
        rate = self._loss_rate if self._remb is None else min(self._loss_rate, self._remb)
        return self._bounded(rate * self._decay(now))

    def send_rate(self, now: float) -> int:
        """What was actually sent over the last ``rate_window`` seconds, in bit/s."""
        self._trim(now)
        return int(self._sent_bytes * 8 / self._rate_window)

    # ------------------------------------------------------------------ internals

    def _bounded(self, rate: float) -> int:
        return int(min(max(rate, self._minimum), self._maximum))

    def _decay(self, now: float) -> float:
        """Factor for the time media went out while the receiver stayed silent."""
        if self._heard is None:
            return 1.0
        silent = min(now, self._last_sent) - (self._heard + self._feedback_timeout)
        return 0.5 ** (silent / self._decay_half_life) if silent > 0 else 1.0

    def _hear(self, now: float) -> None:
        factor = self._decay(now)
        if factor < 1.0:
            self._congested = True
            self._loss_rate = float(self._bounded(self._loss_rate * factor))
            if self._remb is not None:
                self._remb *= factor
        self._heard = now

    def _close_batch(self, now: float) -> None:
        """Apply the averaged loss of the previous RTCP packet's report blocks."""
        at = self._batch_time
        if at is None or now <= at:
            return
        lost, packets = self._batch_lost, self._batch_packets
        self._batch_time, self._batch_lost, self._batch_packets = None, 0.0, 0
        if packets > 0:
            self._apply_loss(lost / packets, self._batch_sent, at)

    def _apply_loss(self, loss: float, sent: int, at: float) -> None:
        current = self._loss_rate if self._remb is None else min(self._loss_rate, self._remb)
        if loss > _HIGH_LOSS:
            delivered = sent * (1.0 - loss)
            self._loss_rate = min(current, max(current * (1.0 - 0.5 * loss), delivered))
            self._congested = True
        elif loss < _LOW_LOSS and at - self._last_increase >= self._increase_interval:
            growth = _GROWTH if self._congested else _FRESH_GROWTH
            self._loss_rate = self._loss_rate * growth + _GROWTH_STEP
            self._last_increase = at
        self._loss_rate = float(self._bounded(self._loss_rate))

    def _trim(self, now: float) -> None:
        horizon = now - self._rate_window
        while self._sent and self._sent[0][0] <= horizon:
            self._sent_bytes -= self._sent.popleft()[1]
