"""Real SRTP sessions for the lanes of the native outbox: one to protect with (what the
subscriber transport's outbound session is) and one to check what arrives with."""

from __future__ import annotations

from typing import Any
import socket

from pylibsrtp._binding import ffi, lib
import pylibsrtp

from sfu import outbox
from sfu.outbox import Outbox

KEY = bytes(range(44))


def _session(direction: int) -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(
        key=KEY, ssrc_type=direction, srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM
    )
    return pylibsrtp.Session(policy)


def _address(name: str) -> int:
    return int(ffi.cast("uintptr_t", ffi.addressof(lib, name)))


def new_outbox(capacity: int = outbox.CAPACITY) -> Outbox:
    return Outbox(_address("srtp_protect"), _address("srtp_protect_rtcp"), capacity)


class Lane:
    """A lane protected with a session of its own, sent on ``sender`` to ``sink`` (without a
    sender, the outbox leaves each datagram to the caller); :attr:`rx` decrypts them."""

    def __init__(
        self,
        sender: socket.socket | None,
        sink: tuple[str, int],
        ssrc: int = 0x77,
        lane: Any = None,
    ) -> None:
        self.tx = _session(pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
        self.rx = _session(pylibsrtp.Policy.SSRC_ANY_INBOUND)
        self.lane = outbox.lane() if lane is None else lane
        self.lane.ssrc = ssrc
        self.lane.payload_type = 100
        self.bind(sender, sink)

    def bind(self, sender: socket.socket | None, sink: tuple[str, int]) -> None:
        outbox.bind(self.lane, int(ffi.cast("uintptr_t", self.tx._srtp[0])), sender, sink)

    def start(self, seq: int) -> None:
        """Start a segment at publisher ``seq``, mapped to itself (offsets 0)."""
        self.lane.segment_start = seq
