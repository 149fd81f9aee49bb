"""All ICE connections of the SFU on one UDP port: one shared socket per local address.

A port per connection makes the firewall rule a wide range and costs a socket per
participant. Here every connection announces the same host candidate, and each datagram that
arrives is given to a connection as ICE allows (RFC 8445, RFC 7983):

* a STUN binding request: to the connection whose local username fragment starts its
  USERNAME (aioice then checks MESSAGE-INTEGRITY and answers);
* a STUN response: to the connection that sent the request with that transaction id (96
  random bits, which nobody off the path can guess);
* anything else: to the connection that owns the remote address, else it is dropped and
  counted.

A remote address becomes a connection's only when that connection sends a binding *success*
response to it. aioice answers with success only after USERNAME and MESSAGE-INTEGRITY checked
out, so a request with a known or guessed username fragment but without the password earns a
401 error and no mapping, and cannot take an address away from the connection that owns it.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Callable, Iterable
import asyncio
import errno
import logging
import socket
import struct

from aioice import stun

logger = logging.getLogger(__name__)

Address = tuple[str, int]

SOCKET_BUFFER_SIZE = 4 * 1024 * 1024
"""Send and receive buffer of a shared socket, which carries every participant's media (the
kernel caps it at ``net.core.rmem_max``/``wmem_max``)."""

_COOKIE = b"\x21\x12\xa4\x42"
_BINDING_REQUEST = b"\x00\x01"
_BINDING_SUCCESS = b"\x01\x01"
_USERNAME = 0x0006
_ATTRIBUTE = struct.Struct("!HH")
_MAX_ADDRESSES = 32
"""Remote addresses one connection keeps (the least recently authenticated goes first)."""
_MAX_TRANSACTIONS = 64
"""Unanswered STUN requests remembered per connection (the oldest goes first)."""
_BURST = 128
"""Datagrams read per wake-up of the event loop, before other work gets its turn."""
_MAX_DATAGRAM = 65536
_RECEIVED = memoryview(bytearray(_MAX_DATAGRAM))
"""Where datagrams are read, then copied out at their size: ``recvfrom(65536)`` allocated 64 KB
per datagram and shrank it, and the heap fragmented between the packets kept for
retransmission (~300 KB per participant of a 10-person meeting)."""


def stun_username(data: bytes) -> str | None:
    """The USERNAME attribute of a STUN message (RFC 8489 section 14.3), or None."""
    end = min(len(data), 20 + int.from_bytes(data[2:4], "big"))
    offset = 20
    while offset + 4 <= end:
        kind, length = _ATTRIBUTE.unpack_from(data, offset)
        offset += 4
        if kind == _USERNAME:
            if offset + length > end:
                return None
            try:
                return bytes(data[offset : offset + length]).decode()
            except UnicodeDecodeError:
                return None
        offset += length + (-length % 4)
    return None


class MuxedTransport(asyncio.DatagramTransport):
    """One ICE connection's share of a :class:`SharedSocket`: what its protocol sends through
    and is closed through (which forgets its username fragment, addresses and requests)."""

    def __init__(
        self,
        shared: SharedSocket,
        ufrag: str,
        password: str,
        protocol: asyncio.DatagramProtocol,
        on_data: Callable[[bytes], None],
    ) -> None:
        super().__init__()
        self.ufrag = ufrag
        self.password = password
        self.protocol = protocol
        self.on_data = on_data
        """Where DTLS, RTP and RTCP go, without the protocol's attempt to parse them as STUN."""
        self.addresses: dict[Address, None] = {}
        """Remote addresses this connection answered with success, least recent first."""
        self.transactions: dict[bytes, None] = {}
        self._shared = shared
        self._sock = shared.sock
        """The raw socket, for the forwarding path that sends on it directly."""
        self._closing = False

    def sendto(self, data: Any, addr: Any = None) -> None:
        if self._closing:
            return
        if data[4:8] == _COOKIE:
            kind = data[:2]
            if kind == _BINDING_SUCCESS:
                self._shared.learn((addr[0], addr[1]), self)
            elif kind == _BINDING_REQUEST:
                self._shared.expect(bytes(data[8:20]), self)
        self._shared.send(data, addr)

    def rekey(self, ufrag: str, password: str) -> None:
        """The connection restarted ICE with new local credentials: requests naming them are
        its from now on (the addresses it learnt stay its until others authenticate)."""
        self._shared.rekey(self, ufrag, password)

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._shared.detach(self)
        asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def is_closing(self) -> bool:
        return self._closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sockname":
            return self._shared.sockname
        if name == "socket":
            return self._shared.sock
        return default


class SharedSocket:
    """One bound UDP socket and the routing tables of the connections using it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sockname: Address = sock.getsockname()[:2]
        self.dropped = 0
        """Datagrams no connection could be found for."""
        self.unsent = 0
        """Datagrams the connections' protocols sent that the socket refused."""
        self._ipv6 = sock.family == socket.AF_INET6
        self._by_address: dict[Address, MuxedTransport] = {}
        self._by_ufrag: dict[str, list[MuxedTransport]] = {}
        self._by_transaction: dict[bytes, MuxedTransport] = {}

    @property
    def routes(self) -> tuple[int, int, int]:
        """How many username fragments, remote addresses and pending requests are known."""
        return len(self._by_ufrag), len(self._by_address), len(self._by_transaction)

    def owner(self, address: Address) -> MuxedTransport | None:
        """The connection datagrams from ``address`` go to."""
        return self._by_address.get(address)

    def attached(self, ufrag: str) -> list[MuxedTransport]:
        """The connections with local username fragment ``ufrag`` (usually one)."""
        return list(self._by_ufrag.get(ufrag, ()))

    def attach(
        self,
        ufrag: str,
        password: str,
        protocol: asyncio.DatagramProtocol,
        on_data: Callable[[bytes], None],
    ) -> MuxedTransport:
        """Give ``protocol`` (of the ICE connection with these local credentials) its share;
        ``on_data`` takes the datagrams that are not STUN."""
        transport = MuxedTransport(self, ufrag, password, protocol, on_data)
        self._by_ufrag.setdefault(ufrag, []).append(transport)
        protocol.connection_made(transport)
        return transport

    def detach(self, transport: MuxedTransport) -> None:
        for address in transport.addresses:
            if self._by_address.get(address) is transport:
                del self._by_address[address]
        for transaction in transport.transactions:
            if self._by_transaction.get(transaction) is transport:
                del self._by_transaction[transaction]
        transport.addresses.clear()
        transport.transactions.clear()
        self._forget_ufrag(transport)

    def rekey(self, transport: MuxedTransport, ufrag: str, password: str) -> None:
        self._forget_ufrag(transport)
        transport.ufrag, transport.password = ufrag, password
        self._by_ufrag.setdefault(ufrag, []).append(transport)

    def _forget_ufrag(self, transport: MuxedTransport) -> None:
        sharing = self._by_ufrag.get(transport.ufrag, [])
        if transport in sharing:
            sharing.remove(transport)
        if not sharing:
            self._by_ufrag.pop(transport.ufrag, None)

    def learn(self, address: Address, transport: MuxedTransport) -> None:
        """``transport`` authenticated a request from ``address``: its datagrams are its."""
        previous = self._by_address.get(address)
        if previous is not None:
            previous.addresses.pop(address, None)
        self._by_address[address] = transport
        transport.addresses[address] = None
        if len(transport.addresses) > _MAX_ADDRESSES:
            oldest = next(iter(transport.addresses))
            del transport.addresses[oldest]
            del self._by_address[oldest]

    def expect(self, transaction: bytes, transport: MuxedTransport) -> None:
        """``transport`` sent a STUN request: the response with its id is its."""
        self._by_transaction[transaction] = transport
        transport.transactions[transaction] = None
        if len(transport.transactions) > _MAX_TRANSACTIONS:
            oldest = next(iter(transport.transactions))
            del transport.transactions[oldest]
            if self._by_transaction.get(oldest) is transport:
                del self._by_transaction[oldest]

    def send(self, data: Any, addr: Any) -> None:
        """Send now or drop (a full buffer): STUN and DTLS retransmit, as media recovers."""
        try:
            self.sock.sendto(data, addr)
        except OSError:
            self.unsent += 1

    def start(self) -> None:
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._readable)

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()

    def _readable(self) -> None:
        """Read what has arrived, up to a burst. (asyncio's datagram transport reads one
        datagram per loop iteration: enough for a socket per connection, far too little for
        every connection's media on one socket.)"""
        recvfrom_into = self.sock.recvfrom_into
        received = _RECEIVED
        for _ in range(_BURST):
            try:
                size, addr = recvfrom_into(received)
                data = bytes(received[:size])
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # an ICMP error about an earlier send, on some systems
                logger.debug("UDP error on %s: %s", self.sockname, e)
                continue
            try:
                self.datagram_received(data, addr)
            except Exception:  # a crafted datagram aioice's parser chokes on
                self.dropped += 1
                logger.debug("datagram dropped", exc_info=True)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self._ipv6:
            addr = addr[:2]
        if data and data[0] > 3:  # DTLS, RTP or RTCP (RFC 7983): the hot path
            owner = self._by_address.get(addr)
            if owner is None:
                self.dropped += 1
            else:
                owner.on_data(data)
            return
        owner = self._stun_owner(data)
        if owner is None:
            self.dropped += 1
        else:
            owner.protocol.datagram_received(data, addr)

    def _stun_owner(self, data: bytes) -> MuxedTransport | None:
        if len(data) < 20 or data[4:8] != _COOKIE:
            return None
        kind = int.from_bytes(data[:2], "big")
        if kind & 0x0110 == 0:  # a request
            username = stun_username(data)
            sharing = self._by_ufrag.get(username.partition(":")[0]) if username else None
            if not sharing:
                return None
            return sharing[0] if len(sharing) == 1 else _authenticated(data, sharing)
        if kind & 0x0100:  # a success or error response
            owner = self._by_transaction.pop(bytes(data[8:20]), None)
            if owner is not None:
                owner.transactions.pop(bytes(data[8:20]), None)
            return owner
        return None  # an indication: ICE has no use for them


def _authenticated(data: bytes, sharing: list[MuxedTransport]) -> MuxedTransport | None:
    """Of connections whose username fragments collide, the one whose password signed it."""
    try:
        message = stun.parse_message(data)
    except (ValueError, struct.error):
        return None
    for transport in sharing:
        if message.check_message_integrity(transport.password.encode("utf8")):
            return transport
    return None


class UdpMux:
    """The shared sockets of one SFU: one per local address, all on the same port."""

    def __init__(self) -> None:
        self.sockets: list[SharedSocket] = []

    def open(self, addresses: Iterable[str], port: int, *, skip_unusable: bool = False) -> None:
        """Bind ``port`` (0: the first address gets a free port, the others the same one).

        ``skip_unusable``: leave out, with a warning, addresses that cannot be bound for another
        reason than the port being taken (for addresses found on the interfaces rather than
        configured: an IPv6 address may not be usable yet).

        Raises:
            OSError: an address cannot be bound; nothing stays bound then.
        """
        for address in addresses:
            try:
                sock = _bind(address, port)
            except OSError as e:
                if skip_unusable and e.errno != errno.EADDRINUSE:
                    logger.warning("media: a local address cannot be bound: %s", e.strerror)
                    logger.debug("cannot bind UDP on %s: %s", address, e)
                    continue
                self.close()
                message = f"cannot bind UDP port {port} on {address}: {e.strerror}"
                raise OSError(e.errno, message) from e
            shared = SharedSocket(sock)
            shared.start()
            self.sockets.append(shared)
            port = shared.sockname[1]
        logger.info("media on UDP port %s (%d local addresses)", port, len(self.sockets))

    @property
    def dropped(self) -> int:
        return sum(shared.dropped for shared in self.sockets)

    @property
    def routes(self) -> tuple[int, int, int]:
        """Username fragments, remote addresses and pending requests known, all sockets."""
        known = [shared.routes for shared in self.sockets]
        return (
            sum(k[0] for k in known),
            sum(k[1] for k in known),
            sum(k[2] for k in known),
        )

    def close(self) -> None:
        for shared in self.sockets:
            shared.close()
        self.sockets.clear()


def _bind(address: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_SIZE)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER_SIZE)
        sock.setblocking(False)
        sock.bind((address, port))
    except OSError:
        sock.close()
        raise
    return sock
