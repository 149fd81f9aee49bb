"""Per-subscriber sequence-number and timestamp rewriting.

Each outgoing stream has its own SSRC and must look like one continuous RTP stream to the
receiver, even when its source changes (another publisher for a speaker slot, another simulcast
layer later). A source segment starts at a key frame: sequence numbers then continue at
``last + 1`` and the timestamp advances by the wall-clock time elapsed since the last packet.
"""

from __future__ import annotations

from typing import Any
import random
import time

from ._fanout import ffi, lib


class SequenceRewriter:
    """Maps (publisher seq, ts) to (subscriber seq, ts) for the current source segment.

    The mapping lives in the stream's lane (:mod:`sfu.outbox`), where the native forwarding
    path applies it to every packet; segments start here.
    """

    __slots__ = ("_clock_rate", "_lane", "_out")

    def __init__(self, lane: Any, clock_rate: int) -> None:
        self._clock_rate = clock_rate
        self._lane = lane
        self._out = ffi.new("unsigned int[2]")
        lane.last_seq = random.getrandbits(15)
        lane.last_ts = random.getrandbits(32)

    @property
    def ts_offset(self) -> int:
        return int(self._lane.ts_offset)

    def start_segment(self, seq: int, ts: int, now: float | None = None) -> None:
        """Make the packet (``seq``, ``ts``) follow the last packet sent, whatever its source."""
        lane = self._lane
        now = time.monotonic() if now is None else now
        last_time = lane.last_time
        elapsed = max(1, int((now - last_time) * self._clock_rate)) if last_time else 1
        lane.seq_offset = (lane.last_seq + 1 - seq) & 0xFFFF
        lane.ts_offset = (lane.last_ts + elapsed - ts) & 0xFFFFFFFF
        lane.segment_start = seq

    def rewrite(self, seq: int, ts: int, now: float) -> tuple[int, int] | None:
        """Outgoing (seq, ts) as the forwarding path maps them (and counts them as the last
        sent), or None for a packet older than the current segment."""
        out = self._out
        if not lib.sfu_rewrite(self._lane, seq, ts, now, out):
            return None
        return int(out[0]), int(out[1])

    def source_seq(self, out_seq: int) -> int | None:
        """Publisher sequence number for a subscriber one (NACK), if in the current segment."""
        segment_start = self._lane.segment_start
        seq = (out_seq - self._lane.seq_offset) & 0xFFFF
        if segment_start < 0 or (seq - segment_start) & 0x8000:
            return None
        return seq
