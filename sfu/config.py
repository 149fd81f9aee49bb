"""Networking and media settings of the SFU, filled by the bridge from its YAML configuration.

Privacy by default: no ICE server is used unless configured (aiortc's own default would contact
a public Google STUN server).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from dataclasses import dataclass

if TYPE_CHECKING:
    from .turn import TurnSecret


@dataclass(frozen=True)
class IceServer:
    """A STUN or TURN server, passed through to aiortc and to clients."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None


@dataclass(frozen=True)
class MediaSettings:
    """What an admin configures about the media plane.

    ``bind_addresses``: local addresses to gather host candidates on; empty means every
    non-loopback interface (aioice's behaviour). ``public_ip``: NAT 1:1 address announced in
    host candidates instead of the bound address (the socket stays bound to the local one).
    ``udp_port``: every connection's host candidate is this one port, on one shared socket per
    local address (:mod:`sfu.udp_mux`); 0 lets the system pick it at :meth:`SFU.start`; None
    gives each connection its own socket. ``udp_port_min``/``udp_port_max``: each connection
    binds its own port inside this inclusive range; set, the range wins over ``udp_port``. TURN
    candidates are allocated by the TURN server and follow neither.

    ``ice_consent_interval``/``ice_consent_failures`` set how fast a silent peer is declared
    gone (RFC 7675 consent freshness). aioice keeps them as module constants, so they apply to
    the whole process; the defaults are aioice's (about 30 s).
    """

    bind_addresses: tuple[str, ...] = ()
    public_ip: str | None = None
    udp_port: int | None = 0
    udp_port_min: int | None = None
    udp_port_max: int | None = None
    ice_servers: tuple[IceServer, ...] = ()
    turn: TurnSecret | None = None
    """TURN with credentials minted per user (:meth:`ice_servers_for`), besides the fixed
    :attr:`ice_servers`."""
    keyframe_request_interval: float = 0.5
    """Minimum seconds between two key-frame requests sent to one publisher stream."""
    speaker_update_interval: float = 0.2
    ice_consent_interval: float = 5.0
    ice_consent_failures: int = 6
    history_size: int = 512
    """Packets kept per published video stream (each simulcast layer) to answer NACKs: over
    1.5 s at :attr:`max_publish_bitrate` (libwebrtc's own senders keep at least 1 s), and the
    video's retransmission history is most of a participant's memory in a call (~1 KB a
    packet)."""
    audio_history_size: int = 64
    """The same for audio: 1.3 s of 20 ms packets (browsers do not ask for audio again)."""
    max_tracks_per_participant: int = 16
    """Streams one participant may publish, however it offers them (camera, microphone, screen
    share and its audio fit many times); further sections it sends on are refused."""
    connect_timeout: float = 20.0
    """Seconds a negotiated transport may take to connect (ICE and DTLS) before its participant
    is removed: a client that never completes ICE must not hold a port and checks forever."""
    max_connecting_transports: int = 100
    max_publish_bitrate: int = 3_000_000
    """bit/s a publisher is told (REMB) it may send, across its simulcast layers."""
    adaptation_interval: float = 0.5
    """Seconds between two rounds of bandwidth allocation, dynacast and publisher REMB."""
    """Transports negotiating or checking connectivity at once; adapters refuse newcomers above
    it (ICE checks cost CPU, and without the shared port each such transport holds a UDP port)."""

    @property
    def single_port(self) -> bool:
        """Whether all connections share :attr:`udp_port` (no port range is set)."""
        return self.udp_port is not None and self.udp_port_min is None

    def ice_servers_for(self, user: str, now: float) -> tuple[IceServer, ...]:
        """The ICE servers ``user`` (a client, or the SFU itself) uses from ``now`` (unix
        time): the fixed ones, and TURN with credentials of its own."""
        if self.turn is None:
            return self.ice_servers
        return (*self.ice_servers, self.turn.ice_server(user, now))

    def __post_init__(self) -> None:
        if (self.udp_port_min is None) != (self.udp_port_max is None):
            raise ValueError("udp_port_min and udp_port_max must be set together")
        if (
            self.udp_port_min is not None
            and self.udp_port_max is not None
            and not (1024 <= self.udp_port_min <= self.udp_port_max <= 65535)
        ):
            raise ValueError("invalid UDP port range")
        if self.udp_port is not None and not (
            self.udp_port == 0 or 1024 <= self.udp_port <= 65535
        ):
            raise ValueError("invalid UDP port")
        if self.max_tracks_per_participant < 1 or self.max_connecting_transports < 1:
            raise ValueError("limits must be at least 1")
        if self.connect_timeout <= 0:
            raise ValueError("connect_timeout must be positive")
        if self.max_publish_bitrate < 100_000:
            raise ValueError("max_publish_bitrate must be at least 100000 bit/s")
        if self.adaptation_interval <= 0:
            raise ValueError("adaptation_interval must be positive")
