"""Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01).

With ``transport-cc`` negotiated, every packet to a subscriber carries a transport-wide sequence
number, and the browser reports, every 50-250 ms, which of them arrived and when (on its own
clock). Joined with when and how big each packet was sent, this is the input of the sender-side
delay-based estimator (:mod:`sfu.delay`), which reacts to queues building up on the path earlier
and more precisely than the receiver's REMB.

Wiring (once the transport stamps the header extension and passes raw RTCP through): record each
sent packet in a :class:`SendHistory`, parse each feedback packet's FCI (the bytes after the
sender and media SSRCs) with :func:`parse_feedback`, :meth:`SendHistory.match` the results and
feed them to :class:`sfu.delay.DelayBasedEstimator`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
import math
import struct

_HEADER = struct.Struct("!HHI")
_DELTA_UNIT = 0.000250
"""Receive deltas count 250 µs."""
_REFERENCE_UNIT = 0.064
"""The reference time counts 64 ms."""
_NOT_RECEIVED, _SMALL_DELTA, _LARGE_DELTA = 0, 1, 2
_SEQUENCES = 1 << 16


@dataclass(frozen=True, slots=True)
class PacketResult:
    sequence: int
    """Transport-wide sequence number (16 bits)."""
    arrival: float | None
    """Seconds on the receiver's clock; None when the packet did not arrive."""


@dataclass(frozen=True, slots=True)
class PacketSample:
    """A reported packet joined with what the sender knows of it."""

    send_time: float
    arrival: float | None
    size: int


def parse_feedback(fci: bytes) -> list[PacketResult]:
    """The packets one feedback reports, in sequence order; ValueError if it is malformed."""
    if len(fci) < _HEADER.size:
        raise ValueError("transport-cc feedback is too short")
    base, count, reference = _HEADER.unpack_from(fci)
    if count == 0:
        raise ValueError("transport-cc feedback reports no packet")
    symbols: list[int] = []
    pos = _HEADER.size
    while len(symbols) < count:
        if pos + 2 > len(fci):
            raise ValueError("transport-cc feedback ends inside its status chunks")
        (chunk,) = struct.unpack_from("!H", fci, pos)
        pos += 2
        if chunk & 0x8000 == 0:  # run length: one status for up to 8191 packets
            symbols += [(chunk >> 13) & 0x3] * (chunk & 0x1FFF)
        elif chunk & 0x4000 == 0:  # 14 one-bit statuses
            symbols += [(chunk >> shift) & 0x1 for shift in range(13, -1, -1)]
        else:  # 7 two-bit statuses
            symbols += [(chunk >> shift) & 0x3 for shift in range(12, -1, -2)]
    del symbols[count:]
    arrival = (reference >> 8) * _REFERENCE_UNIT
    results = []
    for index, symbol in enumerate(symbols):
        sequence = (base + index) % _SEQUENCES
        if symbol == _NOT_RECEIVED:
            results.append(PacketResult(sequence, None))
            continue
        if symbol == _SMALL_DELTA:
            size, fmt = 1, "!B"
        elif symbol == _LARGE_DELTA:
            size, fmt = 2, "!h"
        else:
            raise ValueError("transport-cc feedback uses the reserved status")
        if pos + size > len(fci):
            raise ValueError("transport-cc feedback ends inside its receive deltas")
        (delta,) = struct.unpack_from(fmt, fci, pos)
        pos += size
        arrival += delta * _DELTA_UNIT
        results.append(PacketResult(sequence, arrival))
    return results


class SendHistory:
    """Send time and size of the last 65536 packets, by transport-wide sequence number."""

    def __init__(self) -> None:
        self._times = [math.nan] * _SEQUENCES
        self._sizes = [0] * _SEQUENCES

    def on_sent(self, sequence: int, size: int, now: float) -> None:
        self._times[sequence % _SEQUENCES] = now
        self._sizes[sequence % _SEQUENCES] = size

    def match(self, results: Iterable[PacketResult]) -> list[PacketSample]:
        """The results joined with their sends; packets never sent (forged, stale) are left out."""
        samples = []
        for result in results:
            index = result.sequence % _SEQUENCES
            sent = self._times[index]
            if not math.isnan(sent):
                samples.append(PacketSample(sent, result.arrival, self._sizes[index]))
        return samples
