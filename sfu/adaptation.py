"""Bandwidth adaptation, dynacast and connection quality, wired into the forwarding path.

One :class:`Adaptation` per conference, which the conference ticks every few hundred
milliseconds with ``now``. On each tick:

- each receiving transport's :class:`~sfu.bandwidth.DownlinkEstimator` (fed with REMB and
  receiver reports by the transport) learns the bytes sent since the previous tick, and the
  transport's :class:`~sfu.allocation.Allocator` spends the estimate over its subscriptions
  (audio, screen share, the active speaker's video, the rest), costing each layer at its
  measured bitrate; the targets become the subscriptions' layer caps, and a video the
  downlink cannot carry even at its lowest layer is paused (:class:`StreamStateChanged`);
- the layer forwarded to each subscriber feeds :class:`~sfu.dynacast.Dynacast`, whose
  decisions go to publishers (:class:`SubscribedLayersChanged`);
- publishers' video streams get a REMB of ``max_publish_bitrate``: a browser without feedback
  raises its send rate slowly and keeps its upper simulcast layers off meanwhile, and one that
  hears a REMB early takes it as its starting rate;
- every ``quality_window`` seconds each participant's connection quality is scored from the
  loss and jitter of what it publishes (our receive statistics) and of what it receives (its
  receiver reports) (:class:`ConnectionQualityChanged`).

Apart from the objects' own methods (caps, pauses, REMB) there is no I/O here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
import itertools
import logging

from .allocation import Allocator, StreamDemand, StreamKind, StreamState
from .dynacast import Dynacast
from .events import (
    ConnectionQualityChanged,
    Event,
    StreamStateChanged,
    SubscribedLayersChanged,
    TrackKind,
)
from .quality import ConnectionQuality, QualityTracker, WindowStats, loss_weight, worst
from .transport import TransportRole

if TYPE_CHECKING:
    from .participant import Participant
    from .subscription import Subscription
    from .track import Layer, PublishedTrack
    from .transport import Transport

logger = logging.getLogger(__name__)

EXPECTED_VIDEO_BITRATES = (150_000, 500_000, 1_500_000)
"""bit/s assumed for a simulcast layer (lowest first) before it has been measured."""
EXPECTED_SINGLE_VIDEO_BITRATE = 800_000
EXPECTED_AUDIO_BITRATE = 40_000
DOWNLINK_FLOOR = 250_000
"""bit/s always granted whatever the estimate says: enough for audio and a camera's lowest
layer. The SFU does not probe (no padding), so a browser's REMB, which never exceeds about
1.5 times what arrives, cannot show that a link has room again once video stopped; and a
key frame forwarded in one burst can make a browser report congestion that is not there.
So delay (REMB) only steps layers down; what pauses a video is loss (see ``LOSSY``)."""
LOSSY = 25
"""A receiver report's fraction lost (of 256; about 10 %) above which a subscriber's
downlink is known to be overloaded: only then may its estimate pause videos, not merely
take them down to their lowest layers."""
USABLE = 0.9
"""Share of the estimate the allocator spends (the rest: retransmissions, overhead)."""
_SMOOTHING = 0.3
"""Weight of the newest tick in a layer's measured bitrate."""
_MIN_SPAN = 0.25
"""Seconds a measured bitrate spans at least: over less, a key frame's burst is the rate."""


class RateMeter:
    """bit/s of a growing byte counter, smoothed over ticks; keeps its last value while idle."""

    def __init__(self) -> None:
        self._last: tuple[float, int] | None = None
        self.rate: float | None = None

    def update(self, total: int, now: float) -> None:
        last = self._last
        if last is not None and now - last[0] < _MIN_SPAN:
            return  # a round run early (a subscriber's change): too short a span to measure
        self._last = (now, total)
        if last is None or total <= last[1]:
            return
        current = (total - last[1]) * 8 / (now - last[0])
        self.rate = (
            current if self.rate is None else self.rate + _SMOOTHING * (current - self.rate)
        )


def expected_bitrate(kind: TrackKind, index: int, count: int) -> int:
    if kind is TrackKind.AUDIO:
        return EXPECTED_AUDIO_BITRATE
    if count == 1:
        return EXPECTED_SINGLE_VIDEO_BITRATE
    return EXPECTED_VIDEO_BITRATES[min(index, len(EXPECTED_VIDEO_BITRATES) - 1)]


@dataclass
class _Downlink:
    allocator: Allocator = field(default_factory=lambda: Allocator(usable=USABLE))
    octets: int = 0


@dataclass
class _Window:
    """One stream's quality tracker and the cumulative counts at the previous window."""

    tracker: QualityTracker
    expected: int | None = None
    """None until the first counts, which only set the baseline (a receiver report's
    sequence numbers do not start at zero)."""
    lost: int = 0

    def update(self, expected: int, lost: int, jitter: float) -> ConnectionQuality:
        if self.expected is None:
            self.expected, self.lost = expected, lost
            return self.tracker.quality
        stats = WindowStats(
            max(expected - self.expected, 0), max(lost - self.lost, 0), max(jitter, 0.0)
        )
        self.expected, self.lost = expected, lost
        return self.tracker.update(stats)


class Adaptation:
    """A conference's bandwidth allocation, dynacast and connection quality scoring."""

    def __init__(
        self,
        conference_id: str,
        max_publish_bitrate: int,
        quality_window: float = 2.0,
        dynacast_delay: float = 5.0,
        downlink_floor: int = DOWNLINK_FLOOR,
    ) -> None:
        self._downlink_floor = downlink_floor
        self._conference_id = conference_id
        self._max_publish_bitrate = max_publish_bitrate
        self._quality_window = quality_window
        self._dynacast = Dynacast(dynacast_delay)
        self._downlinks: dict[Transport, _Downlink] = {}
        self._rates: dict[Layer, RateMeter] = {}
        self._simulcast: set[str] = set()
        self._watching: set[tuple[str, str]] = set()
        self._windows: dict[tuple[str, str, str], _Window] = {}
        self._qualities: dict[str, ConnectionQuality] = {}
        self._next_quality: float | None = None

    def tick(
        self,
        participants: Sequence[Participant],
        tracks: Sequence[PublishedTrack],
        speaker: str | None,
        now: float,
    ) -> list[Event]:
        """Adapt every subscriber's streams to its downlink; the events to emit."""
        self._measure(tracks, now)
        events: list[Event] = []
        receiving = [
            (participant, transport)
            for participant in participants
            for transport in participant.transports
            if transport.role is not TransportRole.PUBLISHER
        ]
        self._downlinks = {t: self._downlinks.get(t) or _Downlink() for _, t in receiving}
        for participant, transport in receiving:
            events.extend(self._allocate(participant.id, transport, speaker, now))
        events.extend(self._dynacast_updates(tracks, participants, now))
        for track in tracks:
            # One REMB per track: it caps the publisher's whole send rate, not one stream's.
            bound = [layer for layer in track.layers if layer.ssrc is not None]
            if track.is_video and bound:
                bound[0].send_remb(self._max_publish_bitrate)
        if self._next_quality is None:
            self._next_quality = now + self._quality_window
        elif now >= self._next_quality:
            self._next_quality = now + self._quality_window
            update = self._score(participants, tracks)
            if update is not None:
                events.append(update)
        return events

    # ------------------------------------------------------------------ allocation

    def _measure(self, tracks: Iterable[PublishedTrack], now: float) -> None:
        rates = {}
        for track in tracks:
            for layer in track.layers:
                meter = self._rates.get(layer) or RateMeter()
                meter.update(layer.octets_received, now)
                rates[layer] = meter
        self._rates = rates

    def layer_costs(self, track: PublishedTrack) -> tuple[int, ...]:
        """Each layer's bit/s (measured, else expected), never less than a lower layer's."""
        count = len(track.layers)
        measured = []
        for index, layer in enumerate(track.layers):
            meter = self._rates.get(layer)
            rate = meter.rate if meter is not None else None
            kind = track.info.kind
            measured.append(int(rate) if rate else expected_bitrate(kind, index, count))
        return tuple(itertools.accumulate(measured, max))

    def _allocate(
        self, participant_id: str, transport: Transport, speaker: str | None, now: float
    ) -> list[Event]:
        downlink = self._downlinks[transport]
        subscriptions = [s for s in transport.subscriptions if s.source is not None]
        octets = sum(s.octets_sent for s in transport.subscriptions)
        if octets > downlink.octets:
            transport.downlink.on_sent(octets - downlink.octets, now)
        downlink.octets = octets
        demands = [self._demand(s, speaker) for s in subscriptions]
        floor = self._downlink_floor
        if not any(s.fraction_lost > LOSSY for s in subscriptions):
            lowest = sum(demand.cost(min(demand.wanted, 0)) for demand in demands)
            floor = max(floor, int(lowest / USABLE) + 1)
        estimate = max(transport.downlink.estimate(now), floor)
        allocation = downlink.allocator.allocate(estimate, demands, now)
        if logger.isEnabledFor(logging.DEBUG):
            sent = transport.downlink.send_rate(now)
            remb = transport.bandwidth_estimate
            line = "%s: estimate %d, REMB %s, sent %d: %s"
            logger.debug(line, transport.id, estimate, remb, sent, allocation)
        for subscription, demand in zip(subscriptions, demands, strict=True):
            layer = allocation.layers[demand.stream_id]
            subscription.set_congested(demand.stream_id in allocation.paused)
            if layer is not None and demand.kind is not StreamKind.AUDIO:
                subscription.set_max_layer(layer)
        return [
            StreamStateChanged(
                self._conference_id, participant_id, track_id, state is StreamState.PAUSED
            )
            for track_id, state in allocation.state_changes.items()
        ]

    def _demand(self, subscription: Subscription, speaker: str | None) -> StreamDemand:
        source = subscription.source
        assert source is not None
        info = source.info
        if info.kind is TrackKind.AUDIO:
            kind = StreamKind.AUDIO
        else:
            kind = StreamKind.SCREEN_SHARE if source.screen_share else StreamKind.VIDEO
        return StreamDemand(
            stream_id=info.track_id,
            kind=kind,
            layers=self.layer_costs(source),
            max_layer=None if subscription.paused else subscription.preferred_layer(),
            speaker=info.participant_id == speaker,
        )

    # ------------------------------------------------------------------ dynacast

    def _dynacast_updates(
        self, tracks: Sequence[PublishedTrack], participants: Sequence[Participant], now: float
    ) -> list[Event]:
        simulcast = {t.info.track_id: t for t in tracks if t.is_video and len(t.layers) > 1}
        for track_id in self._simulcast - simulcast.keys():
            self._dynacast.remove_track(track_id)
        for track_id in simulcast.keys() - self._simulcast:
            self._dynacast.add_track(track_id, len(simulcast[track_id].layers), now)
        self._simulcast = set(simulcast)
        watching = set()
        for participant in participants:
            for subscription in participant.subscriptions:
                source = subscription.source
                if source is None or source.info.track_id not in simulcast:
                    continue
                key = (source.info.track_id, participant.id)
                halted = subscription.paused or subscription.congested
                layer = None if halted else subscription.wanted_layer()
                self._dynacast.set_layer(*key, layer, now)
                if layer is not None:
                    watching.add(key)
        for key in self._watching - watching:
            self._dynacast.set_layer(*key, None, now)
        self._watching = watching
        return [
            SubscribedLayersChanged(
                self._conference_id,
                simulcast[update.track_id].info.participant_id,
                update.track_id,
                update.enabled,
            )
            for update in self._dynacast.poll(now)
        ]

    # ------------------------------------------------------------------ connection quality

    def _score(
        self, participants: Sequence[Participant], tracks: Sequence[PublishedTrack]
    ) -> ConnectionQualityChanged | None:
        windows: dict[tuple[str, str, str], _Window] = {}
        changed = []
        for participant in participants:
            qualities = []
            for track in tracks:
                if track.info.participant_id != participant.id:
                    continue
                counts = [layer.statistics() for layer in track.layers]
                key = (participant.id, "up", track.info.track_id)
                window = self._window(key, track.codec)
                qualities.append(
                    window.update(
                        sum(c[0] for c in counts),
                        sum(c[1] for c in counts),
                        max(c[2] for c in counts),
                    )
                )
                windows[key] = window
            for subscription in participant.subscriptions:
                source = subscription.source
                if source is None or subscription.reported_highest == 0:
                    continue  # no receiver report yet
                key = (participant.id, "down", source.info.track_id)
                window = self._window(key, source.codec)
                qualities.append(
                    window.update(
                        subscription.reported_highest,
                        subscription.reported_lost,
                        subscription.jitter / source.clock_rate,
                    )
                )
                windows[key] = window
            quality = worst(qualities)
            if self._qualities.get(participant.id) != quality:
                changed.append((participant.id, quality))
            self._qualities[participant.id] = quality
        self._windows = windows
        present = {participant.id for participant in participants}
        self._qualities = {p: q for p, q in self._qualities.items() if p in present}
        if not changed:
            return None
        return ConnectionQualityChanged(self._conference_id, tuple(changed))

    def _window(self, key: tuple[str, str, str], codec: str) -> _Window:
        return self._windows.get(key) or _Window(QualityTracker(loss_weight(codec)))
