"""The outbox sends queued datagrams with sendmmsg, to the right addresses, in order."""

from __future__ import annotations

from collections.abc import Iterator
import socket

import pytest

from sfu.outbox import Outbox


class Recorder:
    """An owner that records the lengths it is told were not sent."""

    def __init__(self) -> None:
        self.lengths: list[int] = []

    def unsent(self, length: int) -> None:
        self.lengths.append(length)


def udp(family: socket.AddressFamily = socket.AF_INET, host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.settimeout(2)
    return sock


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened = [udp() for _ in range(5)]
    yield opened
    for sock in opened:
        sock.close()


def put(outbox: Outbox, data: bytes) -> int:
    outbox.slot[: len(data)] = data
    return len(data)


def test_queued_datagrams_reach_each_destination_at_the_flush(
    sockets: list[socket.socket],
) -> None:
    sender, *sinks = sockets
    outbox = Outbox(capacity=3)
    assert outbox.batching
    owner = Recorder()
    destinations = [outbox.destination(sender, sink.getsockname()) for sink in sinks]
    sent = []
    for round_ in range(2):  # 8 datagrams through 3 slots: two flushes when full, then one
        for i, destination in enumerate(destinations):
            assert destination is not None
            data = bytes([round_, i]) * (100 + i)
            outbox.queue(destination, put(outbox, data), owner, len(data))
            sent.append((i, data))
    outbox.flush()
    for i, data in sent:
        assert sinks[i].recv(2048) == data
    assert owner.lengths == []
    assert outbox.unsent == 0


def test_datagrams_for_another_socket_go_out_on_it(sockets: list[socket.socket]) -> None:
    first, second, sink, *_ = sockets
    outbox = Outbox()
    owner = Recorder()
    for sender, data in ((first, b"one"), (second, b"two"), (first, b"three")):
        destination = outbox.destination(sender, sink.getsockname())
        assert destination is not None
        outbox.queue(destination, put(outbox, data), owner, len(data))
    outbox.flush()
    received = [sink.recvfrom(2048) for _ in range(3)]
    assert [(data, addr[1]) for data, addr in received] == [
        (b"one", first.getsockname()[1]),
        (b"two", second.getsockname()[1]),
        (b"three", first.getsockname()[1]),
    ]


def test_a_refused_datagram_is_dropped_and_its_owner_told(sockets: list[socket.socket]) -> None:
    sender, sink, *_ = sockets
    outbox = Outbox()
    owner = Recorder()
    good = outbox.destination(sender, sink.getsockname())
    refused = outbox.destination(sender, ("127.0.0.1", 0))  # EINVAL from the kernel
    assert good is not None and refused is not None
    outbox.queue(good, put(outbox, b"before"), owner, 6)
    outbox.queue(refused, put(outbox, b"lost"), owner, 4)
    outbox.queue(good, put(outbox, b"after"), owner, 5)
    outbox.flush()
    assert sink.recv(2048) == b"before"
    assert sink.recv(2048) == b"after"
    assert owner.lengths == [4]
    assert outbox.unsent == 1


def test_ipv6_destinations() -> None:
    try:
        sender, sink = udp(socket.AF_INET6, "::1"), udp(socket.AF_INET6, "::1")
    except OSError:
        pytest.fail("IPv6 loopback is needed for this test")
    try:
        outbox = Outbox()
        destination = outbox.destination(sender, sink.getsockname()[:2])
        assert destination is not None
        outbox.queue(destination, put(outbox, b"six"), Recorder(), 3)
        outbox.flush()
        assert sink.recv(2048) == b"six"
    finally:
        sender.close()
        sink.close()


def test_no_batching_without_a_raw_socket(sockets: list[socket.socket]) -> None:
    """A relayed pair has no socket of its own: its packets are sent one by one."""
    assert Outbox().destination(None, sockets[0].getsockname()) is None
