"""Spending one subscriber's downlink estimate on the streams it wants.

The budget (a share of :meth:`sfu.bandwidth.DownlinkEstimator.estimate`, the rest left for
retransmissions and packet overhead) is spent in a fixed order: audio first and always (it is
cheap and a call without it is no call), then screen shares, then the active speaker's video,
then the other videos in the order given. Video is filled layer by layer: every stream gets its
lowest layer before any gets a second one, so that a tight downlink shows everyone small rather
than a few large; a stream that does not even get its lowest layer is *paused*, which is better
than freezing everyone's video with a link that cannot carry it all.

Hysteresis: a stream steps down at once when the current estimate no longer covers it, but
steps up (or resumes) only as far as the *lowest* estimate of the last ``up_hold`` seconds
covers, so a rise must hold before it is spent and one dip restarts the wait; the estimate's
noise does not make layers flap. A step up that the downlink cannot carry (a step down follows
within ``trial``) doubles that wait, up to ``max_hold``, and one that lasts restores it: a
link that keeps failing the next layer is tried less and less often (each try costs a queue,
and a key frame from the publisher, which every viewer of that layer receives). Changes of
demand under a steady estimate (a tile enlarged or shown again, a new active speaker) take
effect at once, since the headroom has held all along.

Wiring: per subscriber, on each new estimate or change of wanted streams (and at least every
few hundred milliseconds, so that held rises are noticed), call :meth:`Allocator.allocate`;
forward each stream's returned layer (switching on a key frame), and send a stream-state update
(LiveKit ``stream_state_update``) for each entry of :attr:`Allocation.state_changes`. Layers
are indices, 0 the lowest (LiveKit LOW/MEDIUM/HIGH).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
import enum


class StreamKind(enum.IntEnum):
    """What a stream carries; the allocator's spending order is audio, screen share, video."""

    AUDIO = 0
    SCREEN_SHARE = 1
    VIDEO = 2


@dataclass(frozen=True, slots=True)
class StreamDemand:
    """One stream a subscriber is subscribed to."""

    stream_id: str
    kind: StreamKind
    layers: tuple[int, ...]
    """Bitrate (bit/s, expected or measured) of each layer the publisher sends, lowest first.
    A layer not flowing right now (dynacast, the publisher's own uplink) keeps its expected
    bitrate: zero would make it look free, and dynacast re-enables it when it is chosen."""
    max_layer: int | None
    """Highest layer the subscriber's tile wants (clamped to the layers there are), or None when
    the subscriber disabled the stream itself (a hidden tile)."""
    speaker: bool = False
    """Its publisher is the active speaker (ranks its video before the other videos)."""

    def __post_init__(self) -> None:
        if not self.layers or any(bitrate < 0 for bitrate in self.layers):
            raise ValueError(f"{self.stream_id}: layers need one or more bitrates >= 0")
        if self.max_layer is not None and self.max_layer < 0:
            raise ValueError(f"{self.stream_id}: negative max_layer {self.max_layer}")

    @property
    def wanted(self) -> int:
        """Wanted layer index, -1 for none."""
        return -1 if self.max_layer is None else min(self.max_layer, len(self.layers) - 1)

    @property
    def rank(self) -> int:
        if self.kind is StreamKind.VIDEO:
            return 2 if self.speaker else 3
        return int(self.kind)

    def cost(self, layer: int) -> int:
        return self.layers[layer] if layer >= 0 else 0


class StreamState(enum.StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"


@dataclass(frozen=True, slots=True)
class Allocation:
    layers: Mapping[str, int | None]
    """Layer to forward per stream; None forwards nothing (paused, or disabled by the client)."""
    paused: frozenset[str]
    """Streams the subscriber wants but the budget cannot carry even at their lowest layer."""
    state_changes: Mapping[str, StreamState] = field(default_factory=dict)
    """Streams that became paused or active since the previous allocation (including a new
    stream that starts paused, and a paused one the client has since disabled)."""
    used: int = 0
    """bit/s the chosen layers are expected to take."""
    wanted: int = 0
    """bit/s every stream at its wanted layer would take (what a probe would need to prove)."""


class Allocator:
    """Per subscriber: chooses layers within a budget, with hysteresis on the way up."""

    def __init__(
        self,
        up_hold: float = 3.0,
        usable: float = 0.9,
        max_hold: float = 24.0,
        trial: float = 10.0,
    ) -> None:
        """``trial``: seconds after a step up within which a step down shows it failed (the
        feedback that tells takes seconds: a browser's REMB falls, loss is reported)."""
        if not 0.0 < usable <= 1.0:
            raise ValueError("usable must be in (0, 1]")
        if max_hold < up_hold:
            raise ValueError("max_hold must be at least up_hold")
        self._up_hold = up_hold
        self._max_hold = max_hold
        self._trial = trial
        self._hold = up_hold
        """How long a rise must have held before it is spent: ``up_hold``, longer after
        failed steps up."""
        self._raised_at: float | None = None
        """When the estimate last took a stream up, until that step has lasted ``trial``."""
        self._usable = usable
        self._estimates: deque[tuple[float, int]] = deque()
        self._levels: dict[str, int] = {}
        self._wanted: dict[str, int] = {}
        self._paused: frozenset[str] = frozenset()

    def allocate(self, estimate: int, demands: Sequence[StreamDemand], now: float) -> Allocation:
        """Targets for ``demands`` given the downlink ``estimate`` (bit/s) at ``now``."""
        ids = [demand.stream_id for demand in demands]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate stream ids")
        budget = int(estimate * self._usable)
        # Known streams go up only as far as the estimate has held; new ones start at what fits.
        held = _fill(int(self._held(estimate, now) * self._usable), demands, {})
        caps = {sid: max(level, held[sid]) for sid, level in self._levels.items() if sid in held}
        levels = _fill(budget, demands, caps)
        self._learn_from_steps(demands, levels, now)
        self._levels = levels
        self._wanted = {demand.stream_id: demand.wanted for demand in demands}
        paused = frozenset(
            demand.stream_id
            for demand in demands
            if demand.wanted >= 0 and levels[demand.stream_id] < 0
        )
        changes = {sid: StreamState.PAUSED for sid in paused - self._paused}
        changes.update({sid: StreamState.ACTIVE for sid in self._paused - paused if sid in levels})
        self._paused = paused
        return Allocation(
            layers={sid: level if level >= 0 else None for sid, level in levels.items()},
            paused=paused,
            state_changes=changes,
            used=sum(demand.cost(levels[demand.stream_id]) for demand in demands),
            wanted=sum(demand.cost(demand.wanted) for demand in demands),
        )

    def _learn_from_steps(
        self, demands: Sequence[StreamDemand], levels: Mapping[str, int], now: float
    ) -> None:
        """Lengthen the hold after a step up the downlink could not carry; restore it once a
        step up has lasted. Only steps the estimate made count, not changes of demand."""
        raised = lowered = False
        for demand in demands:
            sid = demand.stream_id
            if sid not in self._levels or self._wanted.get(sid) != demand.wanted:
                continue
            raised |= levels[sid] > self._levels[sid]
            lowered |= levels[sid] < self._levels[sid]
        if self._raised_at is not None and now - self._raised_at < self._trial:
            if lowered:
                self._hold = min(2 * self._hold, self._max_hold)
                self._raised_at = None
        elif self._raised_at is not None:
            self._hold = self._up_hold
            self._raised_at = None
        if raised:
            self._raised_at = now

    def _held(self, estimate: int, now: float) -> int:
        """The lowest estimate in effect over the hold."""
        self._estimates.append((now, estimate))
        horizon = now - self._max_hold
        while len(self._estimates) > 1 and self._estimates[1][0] <= horizon:
            self._estimates.popleft()
        since = now - self._hold
        held = [value for at, value in self._estimates if at > since]
        before = [value for at, value in self._estimates if at <= since]
        return min(held + before[-1:])


def _fill(budget: int, demands: Sequence[StreamDemand], caps: Mapping[str, int]) -> dict[str, int]:
    """Layers (-1: none) spending ``budget`` in priority order, each stream at most its cap."""
    levels = {demand.stream_id: -1 for demand in demands}
    video: list[tuple[StreamDemand, int]] = []
    for demand in sorted(demands, key=lambda d: d.rank):  # stable: ties keep the given order
        limit = min(demand.wanted, caps.get(demand.stream_id, demand.wanted))
        if demand.kind is StreamKind.AUDIO:
            levels[demand.stream_id] = limit
            budget -= demand.cost(limit)
        else:
            video.append((demand, limit))
    for layer in range(max((limit for _, limit in video), default=-1) + 1):
        for demand, limit in video:
            sid = demand.stream_id
            if limit < layer or levels[sid] != layer - 1:
                continue
            step = demand.cost(layer) - demand.cost(layer - 1)
            if step <= budget:
                levels[sid] = layer
                budget -= step
    return levels
