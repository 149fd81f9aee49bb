"""Per-subscriber sequence-number and timestamp rewriting.

Each outgoing stream has its own SSRC and must look like one continuous RTP stream to the
receiver, even when its source changes (another publisher for a speaker slot, another simulcast
layer later). A source segment starts at a key frame: sequence numbers then continue at
``last + 1`` and the timestamp advances by the wall-clock time elapsed since the last packet.
"""

from __future__ import annotations

import random
import time


class SequenceRewriter:
    """Maps (publisher seq, ts) to (subscriber seq, ts) for the current source segment."""

    __slots__ = (
        "_clock_rate",
        "_last_time",
        "_segment_start",
        "last_seq",
        "last_ts",
        "seq_offset",
        "ts_offset",
    )

    def __init__(self, clock_rate: int) -> None:
        self._clock_rate = clock_rate
        self.seq_offset = 0
        self.ts_offset = 0
        self.last_seq = random.getrandbits(15)
        self.last_ts = random.getrandbits(32)
        self._last_time = 0.0
        self._segment_start = -1

    def start_segment(self, seq: int, ts: int, now: float | None = None) -> None:
        """Make the packet (``seq``, ``ts``) follow the last packet sent, whatever its source."""
        now = time.monotonic() if now is None else now
        elapsed = max(1, int((now - self._last_time) * self._clock_rate)) if self._last_time else 1
        self.seq_offset = (self.last_seq + 1 - seq) & 0xFFFF
        self.ts_offset = (self.last_ts + elapsed - ts) & 0xFFFFFFFF
        self._segment_start = seq

    def rewrite(self, seq: int, ts: int, now: float) -> tuple[int, int] | None:
        """Outgoing (seq, ts), or None for a packet older than the current segment."""
        if (seq - self._segment_start) & 0x8000:
            return None
        out_seq = (seq + self.seq_offset) & 0xFFFF
        out_ts = (ts + self.ts_offset) & 0xFFFFFFFF
        if not (out_seq - self.last_seq) & 0x8000:
            self.last_seq = out_seq
            self.last_ts = out_ts
            self._last_time = now
        return out_seq, out_ts

    def source_seq(self, out_seq: int) -> int | None:
        """Publisher sequence number for a subscriber one (NACK), if in the current segment."""
        seq = (out_seq - self.seq_offset) & 0xFFFF
        if self._segment_start < 0 or (seq - self._segment_start) & 0x8000:
            return None
        return seq
