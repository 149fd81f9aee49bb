"""Transport-wide feedback parsing, and the delay-based estimator over a simulated bottleneck."""

from __future__ import annotations

import itertools
import struct

import pytest

from sfu.delay import DelayBasedEstimator, Usage
from sfu.twcc import PacketResult, PacketSample, SendHistory, parse_feedback


def fci(base: int, count: int, reference: int, chunks: list[int], deltas: bytes) -> bytes:
    body = struct.pack("!HHI", base, count, (reference << 8) | 7)
    body += b"".join(struct.pack("!H", chunk) for chunk in chunks) + deltas
    return body + bytes(-len(body) % 4)


def arrivals(results: list[PacketResult]) -> list[float | None]:
    return [None if r.arrival is None else round(r.arrival, 6) for r in results]


def test_run_length_chunk() -> None:
    results = parse_feedback(fci(100, 3, 10, [0x2003], bytes([4, 8, 0])))
    assert [r.sequence for r in results] == [100, 101, 102]
    assert arrivals(results) == [0.641, 0.643, 0.643]


def test_one_bit_status_vector_with_a_loss() -> None:
    results = parse_feedback(fci(7, 3, 1, [0xA800], bytes([4, 4])))
    assert arrivals(results) == [0.065, None, 0.066]


def test_two_bit_status_vector_with_a_negative_delta() -> None:
    deltas = bytes([40]) + struct.pack("!h", -8)
    results = parse_feedback(fci(0, 3, 0, [0xD800], deltas))
    assert arrivals(results) == [0.01, 0.008, None]


def test_sequence_numbers_wrap() -> None:
    results = parse_feedback(fci(65535, 2, 0, [0x2002], bytes([1, 1])))
    assert [r.sequence for r in results] == [65535, 0]


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x01",  # shorter than the header
        fci(0, 0, 0, [], b""),  # reports nothing
        fci(0, 20, 0, [0x200A], bytes(10))[:-4],  # chunks missing
        fci(0, 3, 0, [0x2003], bytes([1])),  # deltas missing
        fci(0, 2, 0, [0x6002], b""),  # reserved status
    ],
)
def test_malformed_feedback_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        parse_feedback(data)


def test_send_history_joins_results_and_drops_unknown_ones() -> None:
    history = SendHistory()
    history.on_sent(65535, 1200, 1.0)
    history.on_sent(65536, 300, 1.01)  # the same as 0: the counter wraps
    samples = history.match(
        [PacketResult(65535, 2.0), PacketResult(0, None), PacketResult(1, 2.1)]
    )
    assert samples == [PacketSample(1.0, 2.0, 1200), PacketSample(1.01, None, 300)]


# ---------------------------------------------------------------------- delay-based estimate


class Bottleneck:
    """A link of some capacity behind an unbounded queue, 20 ms away."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._free_at = 0.0

    def arrival(self, send: float, size: int) -> float:
        start = max(send, self._free_at)
        self._free_at = start + size * 8 / self.capacity
        return self._free_at + 0.020


def simulate(
    estimator: DelayBasedEstimator,
    link: Bottleneck,
    start: float,
    end: float,
    send_rate: int | None = None,
) -> list[tuple[float, int]]:
    """The sender sends at the estimate (or ``send_rate``); feedback every 100 ms on what has
    arrived."""
    history = SendHistory()
    pending: list[tuple[int, float]] = []
    trace = []
    sequence = 0
    for step in range(round((end - start) / 0.1)):
        t = start + step * 0.1
        count = max(1, round((send_rate or estimator.estimate()) * 0.1 / 9600))
        for i in range(count):
            send = t + i * 0.1 / count
            history.on_sent(sequence, 1200, send)
            pending.append((sequence, link.arrival(send, 1200)))
            sequence = (sequence + 1) % 65536
        now = t + 0.1
        arrived = [PacketResult(seq, at) for seq, at in pending if at <= now]
        pending = [(seq, at) for seq, at in pending if at > now]
        estimator.on_feedback(history.match(arrived), now)
        trace.append((round(now, 1), estimator.estimate()))
    return trace


def test_rate_grows_while_arrivals_keep_pace() -> None:
    estimator = DelayBasedEstimator(initial=500_000)
    trace = simulate(estimator, Bottleneck(50_000_000), 0.0, 10.0)
    assert estimator.usage is Usage.NORMAL
    assert all(b >= a for (_, a), (_, b) in itertools.pairwise(trace))
    assert 500_000 * 1.06**10 < trace[-1][1] <= 500_000 * 1.08**10 + 1  # 8 % a second


def test_rate_does_not_grow_beyond_what_the_path_has_shown() -> None:
    ahead = DelayBasedEstimator(initial=2_000_000)
    simulate(ahead, Bottleneck(50_000_000), 0.0, 5.0, send_rate=200_000)
    assert ahead.estimate() == 2_000_000
    behind = DelayBasedEstimator(initial=200_000)
    simulate(behind, Bottleneck(50_000_000), 0.0, 20.0, send_rate=200_000)
    assert 300_000 <= behind.estimate() <= 1.5 * 200_000 + 10_000


def test_tracks_a_bottleneck_and_its_drop() -> None:
    estimator = DelayBasedEstimator(initial=600_000)
    link = Bottleneck(2_000_000)
    trace = simulate(estimator, link, 0.0, 40.0)
    converged = [rate for t, rate in trace if t > 25.0]
    assert all(1_000_000 <= rate <= 2_600_000 for rate in converged)
    assert 1_500_000 <= sum(converged) / len(converged) <= 2_200_000

    link.capacity = 500_000
    trace = simulate(estimator, link, 40.0, 70.0)
    assert next(t for t, rate in trace if rate <= 500_000) <= 41.5
    assert all(rate <= 700_000 for t, rate in trace if t > 45.0)
    assert max(rate for t, rate in trace if t > 60.0) >= 300_000


def test_bad_bounds_are_refused() -> None:
    with pytest.raises(ValueError):
        DelayBasedEstimator(initial=10, minimum=100)
