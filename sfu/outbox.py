"""Outgoing datagrams of the forwarding path, sent many at a time with ``sendmmsg(2)``.

With one shared UDP socket (:mod:`sfu.udp_mux`), the copies of one inbound packet for every
subscriber leave through the same socket: one system call for up to :data:`CAPACITY` of them
instead of one ``sendto`` each (the call, its argument parsing and address conversion, and the
kernel's entry and exit are paid once). Packets are written and protected in place in the
outbox's slots, so queueing one costs a few stores.

Where ``sendmmsg`` is missing (not Linux) or a datagram has no raw socket to go to (a TURN
relay), :meth:`Outbox.destination` gives None and the caller sends at once instead.
"""

from __future__ import annotations

from typing import Any, Protocol
import errno
import logging
import socket
import struct

import cffi

logger = logging.getLogger(__name__)

CAPACITY = 64
"""Datagrams per system call. Also bounds how long the first subscribers of a large fan-out
wait for the last ones' packets to be protected before theirs leave."""
MAX_PACKET = 1500
SLOT_SIZE = MAX_PACKET + 256
"""A slot holds one packet and what SRTP adds to it."""

_ffi = cffi.FFI()
_ffi.cdef(
    """
    struct iovec { void *iov_base; size_t iov_len; };
    struct msghdr {
        void *msg_name; unsigned int msg_namelen; struct iovec *msg_iov; size_t msg_iovlen;
        void *msg_control; size_t msg_controllen; int msg_flags;
    };
    struct mmsghdr { struct msghdr msg_hdr; unsigned int msg_len; };
    int sendmmsg(int sockfd, struct mmsghdr *msgvec, unsigned int vlen, int flags);
    """
)
_MSG_DONTWAIT = 0x40
_WORD = _ffi.sizeof("uintptr_t")
_MSG_WORDS = _ffi.sizeof("struct mmsghdr") // _WORD
_NAME_WORD = _ffi.offsetof("struct mmsghdr", "msg_hdr", "msg_name") // _WORD
_SOCKADDR_SIZE = 28
"""Every address is stored in this many bytes (a ``sockaddr_in6``; a ``sockaddr_in`` padded),
so that one ``msg_namelen``, set once, fits both (the kernel checks only that it is enough)."""
_IOV_WORDS = _ffi.sizeof("struct iovec") // _WORD
_IOV_LEN_WORD = _ffi.offsetof("struct iovec", "iov_len") // _WORD


def _sendmmsg() -> Any:
    try:
        libc: Any = _ffi.dlopen(None)
        return libc.sendmmsg
    except (OSError, AttributeError):
        return None


class Owner(Protocol):
    def unsent(self, length: int) -> None:
        """A datagram queued with ``length`` was refused by the socket (a full buffer)."""


class Destination:
    """Where datagrams go: a socket's descriptor and a remote address in ``sockaddr`` form."""

    __slots__ = ("_sockaddr", "address", "fd")

    def __init__(self, sock: socket.socket, host: str, port: int) -> None:
        if sock.family == socket.AF_INET6:
            raw = struct.pack("=H", socket.AF_INET6) + struct.pack(
                "!HI16sI", port, 0, socket.inet_pton(socket.AF_INET6, host), 0
            )
        else:
            raw = struct.pack("=H", socket.AF_INET) + struct.pack(
                "!H4s8x", port, socket.inet_pton(socket.AF_INET, host)
            )
        self._sockaddr = _ffi.new("char[]", raw.ljust(_SOCKADDR_SIZE, b"\0"))
        self.address = int(_ffi.cast("uintptr_t", self._sockaddr))
        self.fd = sock.fileno()


class Outbox:
    """Slots for :data:`CAPACITY` datagrams and the ``mmsghdr`` array that sends them.

    Single-threaded: the event loop's forwarding path writes a packet into :attr:`slot`,
    protects it at :attr:`pointer`, then :meth:`queue` s it; :meth:`flush` sends what is
    queued (the forwarding path calls it after each inbound packet's fan-out).
    """

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._sendmmsg = _sendmmsg()
        self._buffers = _ffi.new("unsigned char[]", capacity * SLOT_SIZE)
        self._messages = _ffi.new("struct mmsghdr[]", capacity)
        self._iovecs = _ffi.new("struct iovec[]", capacity)
        self._message_words = _ffi.cast("uintptr_t *", self._messages)
        self._iovec_words = _ffi.cast("uintptr_t *", self._iovecs)
        whole = memoryview(_ffi.buffer(self._buffers))
        self._views = [whole[i * SLOT_SIZE : (i + 1) * SLOT_SIZE] for i in range(capacity)]
        self._pointers = [self._buffers + i * SLOT_SIZE for i in range(capacity)]
        for i in range(capacity):
            self._iovecs[i].iov_base = self._pointers[i]
            self._messages[i].msg_hdr.msg_iov = self._iovecs + i
            self._messages[i].msg_hdr.msg_iovlen = 1
            self._messages[i].msg_hdr.msg_namelen = _SOCKADDR_SIZE
        self._owners: list[Owner | None] = [None] * capacity
        self._no_owners: list[Owner | None] = [None] * capacity
        self._plain = [0] * capacity
        self._start = 0
        self._count = 0
        self._fd = -1
        self.slot: memoryview = self._views[0]
        """Where the next datagram is written."""
        self.pointer: Any = self._pointers[0]
        """The same, as a C pointer (for protection in place)."""
        self.unsent = 0
        """Datagrams the socket refused."""

    @property
    def batching(self) -> bool:
        """Whether ``sendmmsg`` is available (else :meth:`destination` gives None)."""
        return self._sendmmsg is not None

    def destination(self, sock: socket.socket | None, addr: tuple[str, int]) -> Destination | None:
        """Where :meth:`queue` sends to ``addr`` on ``sock``, or None: send at once."""
        if sock is None or self._sendmmsg is None:
            return None
        try:
            return Destination(sock, addr[0], addr[1])
        except (OSError, ValueError):
            return None

    def queue(self, destination: Destination, length: int, owner: Owner, plain: int) -> None:
        """Send the ``length`` bytes in :attr:`slot` to ``destination`` with the next flush;
        should the socket refuse them, ``owner`` hears of it with ``plain`` (its length of the
        datagram)."""
        index = self._count
        if destination.fd != self._fd:
            if index > self._start:
                self._send(self._start, index)
                self._start = index
            self._fd = destination.fd
        self._message_words[index * _MSG_WORDS + _NAME_WORD] = destination.address
        self._iovec_words[index * _IOV_WORDS + _IOV_LEN_WORD] = length
        self._owners[index] = owner
        self._plain[index] = plain
        index += 1
        if index == self.capacity:
            self._send(self._start, index)
            index = self._start = 0
        self._count = index
        self.slot = self._views[index]
        self.pointer = self._pointers[index]

    def flush(self) -> None:
        """Send everything queued."""
        if self._count > self._start:
            self._send(self._start, self._count)
        self._start = self._count = 0
        self.slot = self._views[0]
        self.pointer = self._pointers[0]

    def _send(self, start: int, end: int) -> None:
        """Send slots ``start`` to ``end``; a datagram the socket refuses is dropped (as a
        full buffer drops it with ``sendto``), and its owner told."""
        owners = self._owners
        first = start
        while start < end:
            sent = self._sendmmsg(self._fd, self._messages + start, end - start, _MSG_DONTWAIT)
            if sent > 0:
                start += sent
                continue
            error = _ffi.errno
            if error in (errno.EAGAIN, errno.ENOBUFS):
                failed = range(start, end)  # the buffer is full: the others would fail too
            else:
                failed = range(start, start + 1)
                logger.debug("sendmmsg: %s", errno.errorcode.get(error, error))
            for index in failed:
                owner = owners[index]
                if owner is not None:
                    owner.unsent(self._plain[index])
            self.unsent += len(failed)
            start = failed.stop
        owners[first:end] = self._no_owners[first:end]
