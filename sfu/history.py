"""One retransmission history per published stream, shared by all of its subscribers.

Subscribers' NACKs are answered from here after mapping their sequence numbers back to the
publisher's, so memory does not grow with the number of subscribers.
"""

from __future__ import annotations


class PacketHistory:
    """Ring of the last ``size`` canonical packets, indexed by publisher sequence number."""

    __slots__ = ("_packets", "_seqs", "_size")

    def __init__(self, size: int = 1024) -> None:
        self._size = size
        self._seqs = [-1] * size
        self._packets: list[bytes | None] = [None] * size

    def put(self, seq: int, packet: bytes) -> None:
        index = seq % self._size
        self._seqs[index] = seq
        self._packets[index] = packet

    def get(self, seq: int) -> bytes | None:
        index = seq % self._size
        return self._packets[index] if self._seqs[index] == seq else None

    def clear(self) -> None:
        self._seqs = [-1] * self._size
        self._packets = [None] * self._size
