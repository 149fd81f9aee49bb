"""Outgoing datagrams of the forwarding path: the Python side of the native outbox
(``sfu/native/fanout.c``, built into ``sfu._fanout`` at install).

Each outgoing stream has a :func:`lane`: the subscriber's SRTP session, remote address and
socket, its SSRC and payload type, the state of its sequence-number, timestamp and VP8 id
rewriting (:mod:`sfu.rewriter`, :class:`sfu.vp8.PictureIdRewriter`), and its packet and octet
counters, in C memory. The forwarding path loads one inbound packet (:meth:`Outbox.load`) and
forwards it on every lane that takes it (:attr:`Outbox.forward`): the rewrite, the copy, the
protection and the queueing happen in one C call, with no Python object made per subscriber.
With one shared UDP socket (:mod:`sfu.udp_mux`) the copies leave many at a time, one
``sendmmsg`` per :data:`CAPACITY` datagrams or per :meth:`Outbox.flush` (after each inbound
packet's fan-out).

A lane without a socket of ours (a TURN relay) gets its datagram back, protected, for the
caller to send (:meth:`Outbox.unqueued`).
"""

from __future__ import annotations

from typing import Any
from collections.abc import Callable
import functools
import socket
import struct

from ._fanout import ffi, lib
from .vp8 import Vp8Info

CAPACITY = 64
"""Datagrams per system call. Also bounds how long the first subscribers of a large fan-out
wait for the last ones' packets to be protected before theirs leave."""
MAX_PACKET = 1500
"""The longest RTP or RTCP packet forwarded (a UDP payload on a 1500-byte MTU, and less)."""
_UNQUEUED_SIZE = MAX_PACKET + 256
_SOCKADDR_SIZE = 28
"""Every address is stored in this many bytes (a ``sockaddr_in6``; a ``sockaddr_in`` padded),
so that one ``msg_namelen`` fits both (the kernel checks only that it is enough)."""


def lane() -> Any:
    """A new outgoing stream's lane, not bound to a transport yet (nothing is sent on it)."""
    new = ffi.new("sfu_lane *")
    new.fd = -1
    new.payload_type = -1
    new.segment_start = -1
    new.last_pid = new.last_tl0 = -1
    return new


def bind(lane: Any, srtp_session: int, sock: socket.socket | None, addr: tuple[str, int]) -> None:
    """Send ``lane``'s packets protected with the SRTP session at address ``srtp_session`` to
    ``addr``, queued on ``sock``; without a socket (a relayed pair) the caller sends them."""
    lane.srtp = ffi.cast("void *", srtp_session)
    lane.fd = -1
    if sock is None:
        return
    try:
        if sock.family == socket.AF_INET6:
            raw = struct.pack("=H", socket.AF_INET6) + struct.pack(
                "!HI16sI", addr[1], 0, socket.inet_pton(socket.AF_INET6, addr[0]), 0
            )
        else:
            raw = struct.pack("=H", socket.AF_INET) + struct.pack(
                "!H4s8x", addr[1], socket.inet_pton(socket.AF_INET, addr[0])
            )
    except (OSError, ValueError):
        return  # an address the socket cannot take: sent by the caller, who gets the error
    ffi.memmove(lane.address, raw.ljust(_SOCKADDR_SIZE, b"\0"), _SOCKADDR_SIZE)
    lane.fd = sock.fileno()


class Outbox:
    """The native outbox: slots for :data:`CAPACITY` datagrams and the ``mmsghdr`` array that
    sends them. Single-threaded: the event loop's."""

    def __init__(self, protect_rtp: int, protect_rtcp: int, capacity: int = CAPACITY) -> None:
        """``protect_rtp`` and ``protect_rtcp``: the addresses of libsrtp's ``srtp_protect``
        and ``srtp_protect_rtcp`` (the copy pylibsrtp bundles)."""
        box = lib.sfu_outbox_new(
            capacity,
            ffi.cast("sfu_protect_fn", protect_rtp),
            ffi.cast("sfu_protect_fn", protect_rtcp),
        )
        if box == ffi.NULL:
            raise MemoryError("no memory for the outbox")
        self.box = ffi.gc(box, lib.sfu_outbox_free)
        self._unqueued = ffi.buffer(lib.sfu_unqueued(box), _UNQUEUED_SIZE)
        self.loaded: bytes | None = None
        """The packet :attr:`forward` and :meth:`send_rtp` send, as last loaded."""
        self.forward: Callable[[Any, int, int, float], int] = functools.partial(
            lib.sfu_forward, self.box
        )
        """``forward(lane, seq, ts, now)``: send the loaded packet, the publisher's ``seq`` and
        ``ts``, on ``lane``, rewritten into the lane's segment (sent at ``now``). The protected
        length; negative when the caller sends it (:meth:`unqueued`); 0 when it was not sent
        (older than the segment, not loaded, no payload type, protection failed). A C function
        with the outbox bound, not a method: it runs once per subscriber of every packet."""

    def load(self, packet: bytes, info: Vp8Info | None) -> None:
        """Make ``packet`` (with its VP8 descriptor's ``info``) the one sent next; one longer
        than :data:`MAX_PACKET` is not sent."""
        if info is None:
            lib.sfu_load(self.box, packet, len(packet), -1, 0, 0, -1, 0)
        else:
            lib.sfu_load(
                self.box,
                packet,
                len(packet),
                info.picture_id,
                info.picture_id_pos,
                info.picture_id_bits,
                info.tl0picidx,
                info.tl0picidx_pos,
            )
        self.loaded = packet

    def send_rtp(self, lane: Any, seq: int, ts: int) -> int:
        """Send the loaded packet on ``lane`` with this sequence number and timestamp (a
        retransmission: already in the lane's numbering); lengths as :attr:`forward`."""
        return int(lib.sfu_send_rtp(self.box, lane, seq, ts))

    def send_rtcp(self, lane: Any, packet: bytes) -> int:
        """Protect ``packet`` (RTCP) for ``lane`` and queue it; lengths as :meth:`send_rtp`."""
        return int(lib.sfu_send_rtcp(self.box, lane, packet, len(packet)))

    def unqueued(self, length: int) -> bytes:
        """The protected datagram of ``length`` bytes the last send left to its caller."""
        return self._unqueued[:length]

    def flush(self) -> None:
        """Send everything queued."""
        lib.sfu_flush(self.box)

    @property
    def unsent(self) -> int:
        """Datagrams the socket refused (a full buffer), taken off their lanes' counters."""
        return int(lib.sfu_unsent(self.box))
