"""Active-speaker detection from RFC 6464 audio levels, without decoding audio.

Each audio packet carries the sender's level in -dBov (0 loudest, 127 silence). Levels are
smoothed per participant with an exponential moving average over roughly ``window`` seconds;
a participant is *speaking* above ``speech_threshold`` (0.6 = about -50 dBov, where speech
sits above background noise), with hysteresis so that the indicator does not flicker; the
*dominant* speaker changes only when a rival is louder by ``switch_margin`` and the current
one has held the floor for ``min_hold`` seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
import math


@dataclass(frozen=True, slots=True)
class SpeakerLevel:
    participant_id: str
    level: float
    """Smoothed loudness in [0, 1] (1 = 0 dBov, 0 = -127 dBov)."""
    active: bool
    """Speaking now (above the speech threshold, with hysteresis)."""


class SpeakerDetector:
    """Aggregates per-packet levels; :meth:`update` reports changes at the caller's pace."""

    def __init__(
        self,
        window: float = 0.3,
        speech_threshold: float = 0.6,
        hysteresis: float = 0.05,
        switch_margin: float = 0.05,
        min_hold: float = 1.0,
    ) -> None:
        self._window = window
        self._on = speech_threshold
        self._off = speech_threshold - hysteresis
        self._margin = switch_margin
        self._min_hold = min_hold
        self._levels: dict[str, float] = {}
        self._last_sample: dict[str, float] = {}
        self._speaking: set[str] = set()
        self._dominant: str | None = None
        self._dominant_since = 0.0

    @property
    def dominant(self) -> str | None:
        return self._dominant

    def observe(self, participant_id: str, dbov: int, now: float) -> None:
        """One audio packet's level (RFC 6464 value, 0..127)."""
        loudness = 1.0 - min(dbov, 127) / 127.0
        last = self._last_sample.get(participant_id)
        self._last_sample[participant_id] = now
        if last is None:
            self._levels[participant_id] = loudness
            return
        alpha = 1.0 - math.exp(-max(now - last, 0.0) / self._window)
        old = self._levels[participant_id]
        self._levels[participant_id] = old + alpha * (loudness - old)

    def remove(self, participant_id: str) -> None:
        self._levels.pop(participant_id, None)
        self._last_sample.pop(participant_id, None)

    def update(self, now: float) -> tuple[list[SpeakerLevel], bool] | None:
        """Speakers (loudest first, then those who just stopped, inactive) and whether the
        dominant speaker changed.

        Returns None when neither the set of speakers nor the dominant speaker changed.
        Participants whose audio stopped decay towards silence.
        """
        for pid, last in self._last_sample.items():
            if now - last > self._window:
                self._levels[pid] *= math.exp(-(now - last) / self._window)
                self._last_sample[pid] = now
        for pid in list(self._speaking):
            if pid not in self._levels:
                self._speaking.discard(pid)
        speaking = {
            pid
            for pid, level in self._levels.items()
            if level >= self._on or (pid in self._speaking and level >= self._off)
        }
        dominant_changed = self._elect(speaking, now)
        if speaking == self._speaking and not dominant_changed:
            return None
        stopped = self._speaking - speaking
        self._speaking = speaking
        ranked = sorted(speaking, key=lambda pid: self._levels[pid], reverse=True)
        levels = [SpeakerLevel(pid, self._levels[pid], True) for pid in ranked]
        levels += [SpeakerLevel(pid, self._levels.get(pid, 0.0), False) for pid in stopped]
        return levels, dominant_changed

    def _elect(self, speaking: set[str], now: float) -> bool:
        current = self._dominant
        if current is not None and current not in self._levels:
            current = None
        best = max(speaking, key=lambda pid: self._levels[pid], default=None)
        if best is None or best == current:
            changed = current != self._dominant
        elif current is None or (
            now - self._dominant_since >= self._min_hold
            and self._levels[best] > self._levels[current] + self._margin
        ):
            current, changed = best, True
            self._dominant_since = now
        else:
            changed = current != self._dominant
        self._dominant = current
        return changed
