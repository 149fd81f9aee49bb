"""Dynacast: tell publishers which simulcast layers anyone watches, so they stop encoding the rest.

Per published track, the highest layer any subscriber is forwarded (an allocator target, see
:mod:`sfu.allocation`) decides what the publisher must send: every layer up to it stays enabled,
since lower layers are what subscribers fall back to at once when their downlink shrinks. A rise
is announced at once (a subscriber is waiting for that layer); a fall only after it has lasted
``disable_delay`` seconds, so that a publisher's encoder does not flap with tiles being resized
or a subscriber's estimate wobbling.

Wiring: register each simulcast track, report each subscriber's target layer for it after every
allocation, and after any change (and periodically, for the delayed falls) send one LiveKit
``subscribed_quality_update`` per :class:`QualityUpdate` that :meth:`Dynacast.poll` returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class QualityUpdate:
    track_id: str
    max_layer: int | None
    """Highest layer anyone watches, None when nobody watches the track."""
    layer_count: int

    @property
    def enabled(self) -> tuple[bool, ...]:
        """Per layer, lowest first: whether the publisher should keep sending it."""
        top = -1 if self.max_layer is None else self.max_layer
        return tuple(layer <= top for layer in range(self.layer_count))


@dataclass(slots=True)
class _Track:
    layer_count: int
    announced: int
    """Highest enabled layer the publisher was last told (-1: none)."""
    watchers: dict[str, int] = field(default_factory=dict)
    lower_since: float | None = None
    """Since when the demand has been below what was announced."""

    @property
    def demand(self) -> int:
        return max(self.watchers.values(), default=-1)


class Dynacast:
    """Debounced per-track layer demand across all subscribers of a conference."""

    def __init__(self, disable_delay: float = 5.0) -> None:
        self._disable_delay = disable_delay
        self._tracks: dict[str, _Track] = {}

    def add_track(self, track_id: str, layer_count: int, now: float) -> None:
        """A new simulcast track; publishers start with every layer enabled."""
        if layer_count < 1:
            raise ValueError(f"{track_id}: a track has at least one layer")
        self._tracks[track_id] = _Track(layer_count, layer_count - 1, lower_since=now)

    def remove_track(self, track_id: str) -> None:
        self._tracks.pop(track_id, None)

    def set_layer(self, track_id: str, subscriber_id: str, layer: int | None, now: float) -> None:
        """The layer forwarded to a subscriber (None: nothing, e.g. paused or unsubscribed)."""
        track = self._tracks.get(track_id)
        if track is None:
            return
        if layer is None:
            track.watchers.pop(subscriber_id, None)
        else:
            track.watchers[subscriber_id] = min(max(layer, 0), track.layer_count - 1)
        self._note(track, now)

    def remove_subscriber(self, subscriber_id: str, now: float) -> None:
        for track in self._tracks.values():
            if track.watchers.pop(subscriber_id, None) is not None:
                self._note(track, now)

    def poll(self, now: float) -> list[QualityUpdate]:
        """Changes to announce now: rises at once, falls that have lasted the delay."""
        updates = []
        for track_id, track in self._tracks.items():
            demand = track.demand
            if demand == track.announced:
                continue
            if demand < track.announced:
                assert track.lower_since is not None
                if now - track.lower_since < self._disable_delay:
                    continue
            track.announced = demand
            track.lower_since = None
            updates.append(
                QualityUpdate(track_id, demand if demand >= 0 else None, track.layer_count)
            )
        return updates

    def _note(self, track: _Track, now: float) -> None:
        if track.demand >= track.announced:
            track.lower_since = None
        elif track.lower_since is None:
            track.lower_since = now
