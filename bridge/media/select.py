"""Placement: which worker (or node) gets a new conference. A whole conference lives on one
worker, so the choice is made once, when its first participant arrives.

Pure logic: the caller passes what each candidate last reported, plus what it placed there
since (a burst of new conferences must not all land on the one that looked idle).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Load:
    """What a candidate carries, as it last reported and as placed since."""

    key: str
    participants: int
    conferences: int
    placed_since_report: int = 0
    accepting: bool = True
    """False while draining, starting, or gone."""
    capacity: float = 1.0
    """Relative size (cores of a node); load is divided by it."""

    @property
    def weight(self) -> float:
        """Participants dominate; an empty conference, or one placed but not yet reported,
        counts as one participant (its first is on the way)."""
        pending = self.conferences + self.placed_since_report
        return (self.participants + pending) / max(self.capacity, 1e-9)


def least_loaded(candidates: Sequence[Load]) -> str | None:
    """The accepting candidate with the least weight (ties: the first listed); None if no
    candidate accepts."""
    best: Load | None = None
    for load in candidates:
        if load.accepting and (best is None or load.weight < best.weight):
            best = load
    return None if best is None else best.key
