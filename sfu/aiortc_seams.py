"""Every use of aiortc, aioice and pylibsrtp private internals, in one place.

aiortc is an endpoint stack: it decodes what it receives and encodes what it sends. The SFU
keeps it for ICE, DTLS-SRTP keying, SDP and RTCP scaffolding, and takes over the RTP plane at
a few private seams (measured in ``reference/aiortc-sfu.md`` §1):

* receive: ``RTCDtlsTransport._handle_rtp_data`` / ``_handle_rtcp_data`` (decrypted bytes);
* send: libsrtp ``srtp_protect`` (pylibsrtp's bundled copy, called from the native outbox of
  :mod:`sfu.outbox`) on pylibsrtp's session, then the nominated aioice pair's socket;
* RTCP towards publishers (RR statistics, NACK, PLI) through the idle ``RTCRtpReceiver``;
* SDP details aiortc does not expose: negotiated codecs/extensions, per-sender msid;
* ICE host candidates (bind addresses, public IP, port range or the shared sockets of
  :mod:`sfu.udp_mux`) and consent timing in aioice;
* ICE restarts asked for by clients, which aiortc ignores: new credentials in aioice;
* memory: one DTLS certificate and SSL context per process instead of one per connection, and
  what aiortc keeps per sender and receiver for encoding and decoding, freed.

Tested with aiortc 1.16.0 (aioice 0.13.0, pylibsrtp 1.0.0); the seams used here have kept their
signatures since aiortc 1.0. :func:`self_test` runs at SFU start-up and raises
:class:`SeamError` if any of them is missing, so an aiortc upgrade fails loudly instead of
forwarding nothing.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Awaitable, Callable, Iterable
import asyncio
import functools
import inspect
import logging
import queue
import random
import threading
import time
import weakref

from aioice.candidate import Candidate, candidate_foundation, candidate_priority
from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver
from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsTransport, SRTPProtectionProfile
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtcrtpreceiver import NackGenerator, StreamStatistics
from aiortc.rtp import (
    RTCP_PSFB_APP,
    AnyRtcpPacket,
    RtcpPacket,
    RtcpPsfbPacket,
    RtpPacket,
    is_rtcp,
    pack_remb_fci,
)
from OpenSSL import SSL
from pylibsrtp._binding import ffi, lib
import aioice.ice
import aioice.turn
import aioice.utils
import aiortc
import pylibsrtp

from . import outbox
from .config import MediaSettings
from .udp_mux import MuxedTransport, UdpMux

logger = logging.getLogger(__name__)

TESTED_AIORTC = ((1, 14), (1, 17))
"""Half-open range of aiortc minor versions the seams are known to work with."""

OUTBOX = outbox.Outbox(
    int(ffi.cast("uintptr_t", ffi.addressof(lib, "srtp_protect"))),
    int(ffi.cast("uintptr_t", ffi.addressof(lib, "srtp_protect_rtcp"))),
)
"""Where outgoing RTP and RTCP is rewritten, protected and queued (single thread: the event
loop's)."""


class SeamError(RuntimeError):
    """An aiortc internal the SFU depends on is missing or changed."""


def _private(obj: object) -> Any:
    """Private attributes are outside the libraries' typed API: access them untyped."""
    return obj


# --------------------------------------------------------------------------- start-up checks


def _require(obj: object, names: Iterable[str], what: str) -> None:
    missing = [name for name in names if not hasattr(obj, name)]
    if missing:
        raise SeamError(f"aiortc {aiortc.__version__}: {what} lacks {', '.join(missing)}")


def _require_params(func: Callable[..., Any], params: list[str], what: str) -> None:
    found = list(inspect.signature(func).parameters)
    if found[: len(params)] != params:
        raise SeamError(f"aiortc {aiortc.__version__}: {what}{tuple(found)}, expected {params}")


async def self_test() -> None:
    """Check every private seam on a throw-away peer connection; raise :class:`SeamError`."""
    version = tuple(int(part) for part in aiortc.__version__.split(".")[:2])
    if not TESTED_AIORTC[0] <= version < TESTED_AIORTC[1]:
        logger.warning("aiortc %s is outside the tested range", aiortc.__version__)
    _require(aioice.ice, ["CONSENT_INTERVAL", "CONSENT_FAILURES", "StunProtocol"], "aioice.ice")
    _require(lib, ["srtp_protect", "srtp_protect_rtcp"], "pylibsrtp binding")
    _require(pylibsrtp.Session, ["protect"], "pylibsrtp.Session")
    protect = [arg.cname for arg in ffi.typeof(lib.srtp_protect).args]
    if protect != ["struct srtp_ctx_t_ *", "void *", "int *"]:
        raise SeamError(f"pylibsrtp: srtp_protect{tuple(protect)}, expected libsrtp 2's")
    outbound = pylibsrtp.Policy(key=bytes(30), ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    _require(pylibsrtp.Session(outbound), ["_srtp"], "pylibsrtp.Session")
    _require(RTCCertificate, ["generateCertificate", "_create_ssl_context"], "RTCCertificate")
    _require_params(
        RTCCertificate._create_ssl_context, ["self", "srtp_profiles"], "_create_ssl_context"
    )
    pc = RTCPeerConnection(aiortc.RTCConfiguration(iceServers=[]))
    try:
        _require(
            pc,
            [
                "_RTCPeerConnection__certificates",
                "_RTCPeerConnection__currentLocalDescription",
                "_RTCPeerConnection__currentRemoteDescription",
                "_RTCPeerConnection__pendingLocalDescription",
                "_RTCPeerConnection__pendingRemoteDescription",
            ],
            "RTCPeerConnection",
        )
        transceiver = pc.addTransceiver("video", direction="sendonly")
        sender, receiver = transceiver.sender, transceiver.receiver
        dtls: Any = sender.transport
        _require(
            transceiver, ["_codecs", "_headerExtensions", "_offerDirection"], "RTCRtpTransceiver"
        )
        _require(
            sender,
            [
                "_ssrc",
                "_stream_id",
                "_track_id",
                "_run_rtp",
                "_run_rtcp",
                "_RTCRtpSender__rtp_started",
                "_RTCRtpSender__rtp_exited",
                "_RTCRtpSender__rtcp_started",
                "_RTCRtpSender__rtcp_exited",
                "_RTCRtpSender__cname",
            ],
            "RTCRtpSender",
        )
        _require(
            receiver,
            [
                "_send_rtcp_pli",
                "_send_rtcp_nack",
                "_RTCRtpReceiver__remote_streams",
                "_RTCRtpReceiver__rtx_ssrc",
                "_RTCRtpReceiver__rtcp_ssrc",
                "_RTCRtpReceiver__jitter_buffer",
                "_RTCRtpReceiver__nack_generator",
                "_RTCRtpReceiver__remote_bitrate_estimator",
                "_RTCRtpReceiver__decoder_queue",
                "_RTCRtpReceiver__decoder_error",
                "_RTCRtpReceiver__rtcp_started",
                "_RTCRtpReceiver__rtcp_exited",
                "_RTCRtpReceiver__started",
                "_RTCRtpReceiver__stop_decoder",
                "receive",
                "_send_rtcp",
            ],
            "RTCRtpReceiver",
        )
        _require(
            dtls,
            [
                "_handle_rtp_data",
                "_handle_rtcp_data",
                "_send_rtp",
                "_rtp_router",
                "_rtp_header_extensions_map",
                "_tx_srtp",
                "_rx_srtp",
            ],
            "RTCDtlsTransport",
        )
        _require(dtls._rtp_router, ["route_rtp", "route_rtcp", "mid_table"], "RtpRouter")
        _require(dtls.transport, ["_connection"], "RTCIceTransport")
        connection = _private(dtls.transport.iceGatherer)._connection
        _require(
            connection,
            [
                "_protocols",
                "_nominated",
                "stun_server",
                "local_username",
                "local_password",
                "_local_username",
                "_local_password",
                "remote_username",
                "remote_password",
            ],
            "aioice.Connection",
        )
        _require(aioice.utils, ["random_string"], "aioice.utils")
        _require(
            aioice.ice.StunProtocol,
            ["connection_made", "connection_lost", "datagram_received", "send_stun"],
            "aioice.StunProtocol",
        )
        _require_params(aioice.ice.StunProtocol, ["receiver"], "aioice.StunProtocol")
        _require_params(
            connection.data_received, ["data", "component"], "Connection.data_received"
        )
        _require_params(dtls._handle_rtp_data, ["data", "arrival_time_ms"], "_handle_rtp_data")
        _require_params(dtls._handle_rtcp_data, ["data"], "_handle_rtcp_data")
        _require_params(receiver._send_rtcp_nack, ["media_ssrc", "lost"], "_send_rtcp_nack")
        _require_params(
            connection.get_component_candidates,
            ["component", "addresses", "timeout"],
            "Connection.get_component_candidates",
        )
    finally:
        await pc.close()


# --------------------------------------------------------------------------- DTLS

CERTIFICATE_ROTATION = 24 * 3600.0
"""Seconds the process's DTLS certificate serves new connections before a new one is made
(aiortc's certificates are valid for 30 days; a connection keeps the one it started with)."""


class _ProcessCertificate(RTCCertificate):
    """A DTLS certificate shared by the process's connections, with one SSL context per SRTP
    profile list (aiortc makes a key, a certificate and an OpenSSL context per connection:
    ~40 KB of native memory each). Janus and mediasoup likewise use one certificate per
    process: a client checks the fingerprint the signalling gave it, which is the same for all;
    the private key never leaves the process."""

    def __init__(self, key: Any, cert: Any) -> None:
        super().__init__(key=key, cert=cert)
        self.made = time.monotonic()
        self._contexts: dict[tuple[bytes, ...], SSL.Context] = {}

    def _create_ssl_context(self, srtp_profiles: list[SRTPProtectionProfile]) -> SSL.Context:
        profiles = tuple(profile.openssl_profile for profile in srtp_profiles)
        context = self._contexts.get(profiles)
        if context is None:
            context = super()._create_ssl_context(srtp_profiles)
            # Shared, a session cache would keep a session (and a peer certificate) per
            # connection; nothing resumes a DTLS-SRTP session anyway.
            context.set_session_cache_mode(SSL.SESS_CACHE_OFF)
            # An idle connection's record buffers (~20 KB) are freed until the next record.
            context.set_mode(SSL.MODE_RELEASE_BUFFERS)
            self._contexts[profiles] = context
        return context


_certificate: _ProcessCertificate | None = None


def share_certificate(pc: RTCPeerConnection) -> None:
    """Make ``pc`` (just created, no transport yet) use the process's DTLS certificate."""
    global _certificate
    if _certificate is None or time.monotonic() - _certificate.made > CERTIFICATE_ROTATION:
        _certificate = _ProcessCertificate.generateCertificate()
    _private(pc)._RTCPeerConnection__certificates = [_certificate]


# --------------------------------------------------------------------------- ICE


def configure_consent(settings: MediaSettings) -> None:
    """Set RFC 7675 consent timing. Process-wide: aioice keeps it in module constants."""
    ice = _private(aioice.ice)
    ice.CONSENT_INTERVAL = settings.ice_consent_interval
    ice.CONSENT_FAILURES = settings.ice_consent_failures


def prepare_ice(pc: RTCPeerConnection, settings: MediaSettings, mux: UdpMux | None) -> None:
    """Make the not-yet-gathered ICE gatherers of ``pc`` obey the bind/port/IP settings.

    Call before each ``setLocalDescription``: aiortc gathers there. With ``mux``, host
    candidates are on its shared sockets. Without any such setting aioice's own gathering is
    left alone.
    """
    if not (settings.bind_addresses or settings.public_ip or settings.udp_port_min or mux):
        return
    for gatherer in _ice_gatherers(pc):
        connection = _private(gatherer)._connection
        if gatherer.state == "new" and not getattr(connection, "_sfu_prepared", False):
            connection._sfu_prepared = True
            connection.get_component_candidates = _host_gathering(connection, settings, mux)


def host_addresses() -> list[str]:
    """The addresses aioice gathers host candidates on when none are configured."""
    return aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True)


def follow_ice_restart(pc: RTCPeerConnection, remote_sdp: str) -> bool:
    """Apply the ICE restart a remote offer asks for (new ``ice-ufrag``/``ice-pwd``) to the
    running ICE connections of ``pc``; call after ``setRemoteDescription``, before
    ``createAnswer``. Returns whether the offer restarted ICE.

    aiortc ignores a restart: its ICE transport starts once, so checks with the client's new
    credentials would be refused and the client's new path never forms. Here the connection
    takes the new remote credentials and fresh local ones (the answer carries them); aioice,
    as the controlled side, then moves to the pair the client nominates (a new address after
    a network change). Candidates are not gathered again: the SFU's addresses stay the same.
    """
    credentials = dict(
        line.split(":", 1)
        for line in remote_sdp.splitlines()
        if line.startswith(("a=ice-ufrag:", "a=ice-pwd:"))
    )
    ufrag, password = credentials.get("a=ice-ufrag"), credentials.get("a=ice-pwd")
    if not ufrag or not password:
        return False
    restarted = False
    for gatherer in _ice_gatherers(pc):
        connection = _private(gatherer)._connection
        if connection.remote_username in (None, ufrag):
            continue  # not started yet (the first offer starts it), or no restart
        connection.remote_username, connection.remote_password = ufrag, password
        connection._local_username = aioice.utils.random_string(4)
        connection._local_password = aioice.utils.random_string(22)
        for protocol in connection._protocols:
            shared = getattr(protocol, "transport", None)
            if isinstance(shared, MuxedTransport):
                shared.rekey(connection._local_username, connection._local_password)
        restarted = True
    return restarted


def _ice_gatherers(pc: RTCPeerConnection) -> set[Any]:
    """The ICE gatherers of ``pc``'s transports, skipping parts a failed negotiation left
    unset."""
    dtls_transports = [t.sender.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        dtls_transports.append(pc.sctp.transport)
    return {
        dtls.transport.iceGatherer
        for dtls in dtls_transports
        if dtls is not None and dtls.transport is not None
    }


def release_sockets(pc: RTCPeerConnection) -> None:
    """Close the UDP sockets of every ICE connection of ``pc``. ``pc.close()`` does this, but
    not when it raises half-way (after an offer aiortc rejected part-way through applying)."""
    for gatherer in _ice_gatherers(pc):
        connection = _private(gatherer)._connection
        for protocol in list(connection._protocols):
            transport = getattr(protocol, "transport", None)
            if transport is not None:
                transport.close()
        connection._protocols.clear()


def _host_gathering(
    connection: Any, settings: MediaSettings, mux: UdpMux | None
) -> Callable[..., Awaitable[list[Candidate]]]:
    """A replacement for ``Connection.get_component_candidates`` that puts host candidates
    where the admin wants them; STUN/TURN candidates are still gathered by aioice."""
    original = connection.get_component_candidates

    async def get_component_candidates(
        component: int, addresses: list[str], timeout: int = 5
    ) -> list[Candidate]:
        if mux is not None:
            protocols = _muxed_protocols(connection, component, mux)
        else:
            protocols = await _bound_protocols(connection, settings, addresses)
        candidates: list[Candidate] = []
        tasks = []
        for protocol in protocols:
            bound_host, port = protocol.transport.get_extra_info("sockname")[:2]
            host = settings.public_ip or bound_host
            protocol.local_candidate = Candidate(
                foundation=candidate_foundation("host", "udp", host),
                component=component,
                transport="udp",
                priority=candidate_priority(component, "host"),
                host=host,
                port=port,
                type="host",
            )
            candidates.append(protocol.local_candidate)
            connection._protocols.append(protocol)
            if connection.stun_server and ":" not in bound_host and not settings.public_ip:
                tasks.append(
                    aioice.ice.server_reflexive_candidate(protocol, connection.stun_server)
                )
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(result, Candidate):
                candidates.append(result)
        # With no host addresses, aioice only allocates the TURN relay candidate (if any).
        candidates += await original(component=component, addresses=[], timeout=timeout)
        return candidates

    return get_component_candidates


def _muxed_protocols(
    connection: Any, component: int, mux: UdpMux
) -> list[aioice.ice.StunProtocol]:
    """A protocol of ``connection`` on each of the mux's shared sockets. Media skips the
    protocol (which would try to parse it as STUN first) and goes to the connection."""
    on_data = functools.partial(connection.data_received, component=component)
    protocols = []
    for shared in mux.sockets:
        protocol = aioice.ice.StunProtocol(connection)
        shared.attach(connection.local_username, connection.local_password, protocol, on_data)
        protocols.append(protocol)
    return protocols


async def _bound_protocols(
    connection: Any, settings: MediaSettings, addresses: list[str]
) -> list[aioice.ice.StunProtocol]:
    """A protocol of ``connection`` on a socket of its own on each address."""
    loop = asyncio.get_running_loop()
    protocols = []
    for address in settings.bind_addresses or addresses:
        try:
            transport, protocol = await _bind_udp(
                loop, lambda: aioice.ice.StunProtocol(connection), address, settings
            )
        except OSError as exc:
            logger.warning("cannot bind UDP on %s: %s", address, exc)
            continue
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(
                aioice.ice.socket.SOL_SOCKET,
                aioice.ice.socket.SO_RCVBUF,
                aioice.turn.UDP_SOCKET_BUFFER_SIZE,
            )
        protocols.append(protocol)
    return protocols


async def _bind_udp(
    loop: asyncio.AbstractEventLoop,
    factory: Callable[[], aioice.ice.StunProtocol],
    address: str,
    settings: MediaSettings,
) -> tuple[asyncio.DatagramTransport, aioice.ice.StunProtocol]:
    if settings.udp_port_min is None or settings.udp_port_max is None:
        return await loop.create_datagram_endpoint(factory, local_addr=(address, 0))
    low, high = settings.udp_port_min, settings.udp_port_max
    size = high - low + 1
    start = random.randrange(size)
    for i in range(size):
        try:
            return await loop.create_datagram_endpoint(
                factory, local_addr=(address, low + (start + i) % size)
            )
        except OSError:
            continue
    raise OSError(f"no free UDP port in {low}-{high}")


# --------------------------------------------------------------------------- receive path


def hook_transport(
    dtls: RTCDtlsTransport,
    on_rtp: Callable[[bytes], None],
    on_rtcp: Callable[[AnyRtcpPacket], None],
    on_malformed_rtcp: Callable[[], None],
) -> None:
    """Take over decrypted RTP (no decoding) and observe RTCP before aiortc routes it."""
    transport = _private(dtls)

    async def handle_rtp_data(data: bytes, arrival_time_ms: int) -> None:
        on_rtp(data)

    async def handle_rtcp_data(data: bytes) -> None:
        try:
            packets = RtcpPacket.parse(data)
        except ValueError:
            on_malformed_rtcp()
            return
        for packet in packets:
            on_rtcp(packet)
            # aiortc's receivers note the publishers' SRs, for the LSR/DLSR of their RRs (the
            # publisher's RTT), and the senders of local tracks (the mixer's) are aiortc's own.
            # The sender slots the SFU feeds would only keep statistics nobody reads (a stats
            # object per subscriber's RR), answer NACKs from an empty history and flag key
            # frames for an encoder they do not have: the SFU handles all of it (on_rtcp).
            for recipient in transport._rtp_router.route_rtcp(packet):
                if recipient not in _PARKED:
                    await recipient._handle_rtcp_packet(packet)

    transport._handle_rtp_data = handle_rtp_data
    transport._handle_rtcp_data = handle_rtcp_data
    _receive_rtp_directly(dtls, on_rtp)


def _receive_rtp_directly(dtls: RTCDtlsTransport, on_rtp: Callable[[bytes], None]) -> None:
    """SRTP media arriving on a shared socket (:mod:`sfu.udp_mux`) is unprotected and handed
    to ``on_rtp`` in the same call, instead of through aioice's queue and aiortc's receive
    task (a queue entry, a future and several coroutine steps per packet). STUN, DTLS and
    SRTCP keep aiortc's way; so does everything on a socket of the connection's own."""
    transport = _private(dtls)
    for protocol in transport.transport._connection._protocols:
        shared = getattr(protocol, "transport", None)
        if not isinstance(shared, MuxedTransport):
            continue
        queued = shared.on_data

        def on_data(data: bytes, queued: Callable[[bytes], None] = queued) -> None:
            srtp = transport._rx_srtp
            if srtp is None or not 127 < data[0] < 192 or is_rtcp(data):
                queued(data)
                return
            try:
                plain = srtp.unprotect(data)
            except pylibsrtp.Error:
                return  # as aiortc: a replayed or forged packet
            on_rtp(plain)

        shared.on_data = on_data


_LIGHTENED: weakref.WeakSet[RTCRtpReceiver] = weakref.WeakSet()


def lighten_receiver(receiver: RTCRtpReceiver) -> None:
    """Free what an aiortc receiver keeps for decoding: its jitter buffer, NACK generator and
    bitrate estimator (~100 KB for video), its decoder thread with the thread's queue, and,
    until it starts (the receivers of sender slots never do), its RTCP task's events. The SFU's
    receivers never see RTP (:func:`hook_transport` takes it before them). Idempotent."""
    private = _private(receiver)
    private._RTCRtpReceiver__jitter_buffer = None
    private._RTCRtpReceiver__nack_generator = None
    private._RTCRtpReceiver__remote_bitrate_estimator = None
    if receiver in _LIGHTENED:
        return
    _LIGHTENED.add(receiver)
    if private._RTCRtpReceiver__started:
        _stop_decoder(private)
        return
    private._RTCRtpReceiver__decoder_queue = private._RTCRtpReceiver__decoder_error = None
    private._RTCRtpReceiver__rtcp_started = private._RTCRtpReceiver__rtcp_exited = None
    receive = private.receive

    async def receive_without_decoder(parameters: Any) -> None:
        if not private._RTCRtpReceiver__started:
            # aiortc starts its RTCP task and a decoder thread here, with these
            private._RTCRtpReceiver__decoder_queue = queue.Queue()
            private._RTCRtpReceiver__decoder_error = threading.Event()
            private._RTCRtpReceiver__rtcp_started = asyncio.Event()
            private._RTCRtpReceiver__rtcp_exited = asyncio.Event()
        await receive(parameters)
        _stop_decoder(private)

    private.receive = receive_without_decoder


def _stop_decoder(private: Any) -> None:
    """End the (idle) decoder thread of a started receiver and free its queue."""
    private._RTCRtpReceiver__stop_decoder()
    private._RTCRtpReceiver__decoder_queue = private._RTCRtpReceiver__decoder_error = None


def identify_stream(dtls: RTCDtlsTransport, data: bytes) -> RTCRtpReceiver | None:
    """Which receiver an unknown SSRC belongs to: by mid extension, SDP SSRC or payload type.

    Called once per new SSRC, so the full aiortc parse is affordable here.
    """
    transport = _private(dtls)
    try:
        packet = RtpPacket.parse(data, transport._rtp_header_extensions_map)
    except ValueError:
        return None
    router = transport._rtp_router
    receiver = router.mid_table.get(packet.extensions.mid) if packet.extensions.mid else None
    found: RTCRtpReceiver | None = receiver or router.route_rtp(packet)
    return found


def rtx_ssrcs(receiver: RTCRtpReceiver) -> dict[int, int]:
    """RTX SSRC -> media SSRC, as declared in the remote SDP (``a=ssrc-group:FID``)."""
    return dict(_private(receiver)._RTCRtpReceiver__rtx_ssrc)


_SHARED: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
"""Parts of session descriptions in use (:func:`share_descriptions`), by value (``repr``)."""


def _shared(item: Any) -> Any:
    return _SHARED.setdefault(repr(item), item)


def _share(items: list[Any]) -> None:
    """Replace, in place, each item of ``items`` by the process's equal one."""
    for index, item in enumerate(items):
        shared = _shared(item)
        if shared is not item:
            items[index] = shared


def share_descriptions(pc: RTCPeerConnection) -> None:
    """Let ``pc`` keep one instance of each codec, header extension, ICE candidate, ICE and
    DTLS parameters (with fingerprints) in the process instead of its own copies; call after
    each description is set.

    aiortc copies them for every transceiver and keeps them again in each media section of the
    descriptions it holds: ~300 codecs with their feedback lists and parameters per
    participant of a 10-person meeting, nearly all equal (and a bundled connection's sections
    all carry the same ICE and DTLS parameters). It never changes one once made (it shares its
    own codec defaults between transceivers the same way), so equal ones can be one.
    """
    private = _private(pc)
    for description in (
        private._RTCPeerConnection__currentLocalDescription,
        private._RTCPeerConnection__currentRemoteDescription,
        private._RTCPeerConnection__pendingLocalDescription,
        private._RTCPeerConnection__pendingRemoteDescription,
    ):
        for media in description.media if description is not None else ():
            _share(media.rtp.codecs)
            _share(media.rtp.headerExtensions)
            _share(media.ice_candidates)
            if media.ice is not None:
                media.ice = _shared(media.ice)
            if media.dtls is not None:
                _share(media.dtls.fingerprints)
                media.dtls = _shared(media.dtls)
    for transceiver in pc.getTransceivers():
        _share(_private(transceiver)._codecs)
        _share(_private(transceiver)._headerExtensions)


def offered_direction(transceiver: RTCRtpTransceiver) -> str | None:
    """Direction the remote offer allows us (``sendonly`` = the client wants to receive)."""
    direction = _private(transceiver)._offerDirection
    return str(direction) if direction is not None else None


def negotiated_codecs(transceiver: RTCRtpTransceiver) -> list[RTCRtpCodecParameters]:
    return list(_private(transceiver)._codecs)


def negotiated_extension_id(transceiver: RTCRtpTransceiver, uri: str) -> int:
    """The id negotiated for header extension ``uri``, or 0."""
    for extension in _private(transceiver)._headerExtensions:
        if extension.uri == uri:
            return int(extension.id)
    return 0


class _Header:
    """The two fields aiortc's statistics read from a packet."""

    __slots__ = ("sequence_number", "timestamp")

    def __init__(self) -> None:
        self.sequence_number = 0
        self.timestamp = 0


class PublisherFeedback:
    """RTCP towards a publisher stream, through its idle aiortc receiver.

    Feeds aiortc's receiver statistics (so its periodic RR stays truthful), generates NACKs for
    gaps, sends PLIs and REMB (the bitrate the publisher may send: without any feedback a
    browser ramps its send rate up slowly, and leaves its upper simulcast layers off meanwhile).
    """

    def __init__(self, receiver: RTCRtpReceiver, ssrc: int, clock_rate: int, nack: bool) -> None:
        self._receiver = _private(receiver)
        self._ssrc = ssrc
        self._header: Any = _Header()
        self._stats = StreamStatistics(clock_rate)
        self._nack = NackGenerator() if nack else None
        self._lost = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._receiver._RTCRtpReceiver__remote_streams[ssrc] = self._stats

    def received(self, seq: int, timestamp: int) -> None:
        header = self._header
        header.sequence_number = seq
        header.timestamp = timestamp
        self._stats.add(header)
        if self._nack is not None and self._nack.add(header):
            lost = sorted(self._nack.missing)
            self._spawn(self._receiver._send_rtcp_nack(self._ssrc, lost))

    def request_keyframe(self) -> None:
        self._spawn(self._receiver._send_rtcp_pli(self._ssrc))

    @property
    def packets_lost(self) -> int:
        """Cumulative, as receiver reports count it, but never decreasing: a retransmission
        that fills a gap later does not undo the loss (monitoring counts only go up)."""
        self._lost = max(self._lost, int(self._stats.packets_lost))
        return self._lost

    def send_remb(self, bitrate: int) -> None:
        sender_ssrc = self._receiver._RTCRtpReceiver__rtcp_ssrc
        if sender_ssrc is None:
            return
        packet = RtcpPsfbPacket(
            fmt=RTCP_PSFB_APP,
            ssrc=sender_ssrc,
            media_ssrc=0,
            fci=pack_remb_fci(bitrate, [self._ssrc]),
        )
        self._spawn(self._receiver._send_rtcp(packet))

    def statistics(self) -> tuple[int, int, float]:
        """Packets expected and lost since the stream began, and the jitter in seconds."""
        stats = self._stats
        if stats.max_seq is None:
            return 0, 0, 0.0
        return stats.packets_expected, stats.packets_lost, stats.jitter / stats._clockrate

    def close(self) -> None:
        self._receiver._RTCRtpReceiver__remote_streams.pop(self._ssrc, None)
        for task in self._tasks:
            task.cancel()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


# --------------------------------------------------------------------------- send path


def sender_ssrc(sender: RTCRtpSender) -> int:
    return int(_private(sender)._ssrc)


def set_msid(sender: RTCRtpSender, stream_id: str, track_id: str) -> None:
    """Choose the ``a=msid`` of one sender (aiortc uses one random stream id per PC)."""
    private = _private(sender)
    private._stream_id = stream_id
    private._track_id = track_id


_PARKED: weakref.WeakSet[RTCRtpSender] = weakref.WeakSet()
"""The sender slots the SFU feeds (:func:`park_sender`)."""

_DONE = asyncio.Event()
"""Set once and for all: stands for the started and exited events of parked senders' tasks."""
_DONE.set()


async def _done(*args: object) -> None:
    """An aiortc sender task that has nothing to do."""


def park_sender(sender: RTCRtpSender) -> None:
    """Keep aiortc's RTP and RTCP loops of a sender slot the SFU feeds from running (call
    before the slot is negotiated): the SFU writes its packets (:class:`RtpOutput`). The RTP
    loop waited for frames of a track that has none; the RTCP loop built, every second, an SR
    of packets it never sent (dropped), an SDES and a task to send them (7-9 % of the event
    loop with 400 slots). The SFU sends each stream's SR, translated from the publisher's, with
    the SDES in the same compound packet instead
    (:meth:`~sfu.subscription.Subscription.on_sender_report`). Their tasks now end at once,
    and the four events aiortc waits on to stop them are one that is always set: ~6 KB less
    per slot."""
    private = _private(sender)
    _PARKED.add(sender)
    private._run_rtp = private._run_rtcp = _done
    private._RTCRtpSender__rtp_started = private._RTCRtpSender__rtp_exited = _DONE
    private._RTCRtpSender__rtcp_started = private._RTCRtpSender__rtcp_exited = _DONE


def sender_cname(sender: RTCRtpSender) -> str:
    """The CNAME a negotiated sender announces in SDP (aiortc's, one per connection)."""
    return str(_private(sender)._RTCRtpSender__cname or "")


class RtpOutput:
    """One outgoing stream's lane (:mod:`sfu.outbox`) bound to the transport it goes out on:
    the transport's SRTP session, and its nominated pair's socket and remote address.

    On a plain UDP pair datagrams are queued in the outbox, which sends those of one fan-out
    together (the forwarding path flushes it); a full socket buffer drops them, as SFUs do,
    instead of queueing. Relayed (TURN) pairs send each datagram at once. RTCP the SFU writes
    itself (translated sender reports) takes the same way.
    """

    __slots__ = ("_addr", "_lane", "_sendto", "_session")

    def __init__(self, dtls: RTCDtlsTransport, lane: Any) -> None:
        private = _private(dtls)
        self._session = private._tx_srtp
        """Kept: the lane points into this SRTP session."""
        pair = private.transport._connection._nominated[1]
        self._addr = pair.remote_addr
        transport = pair.protocol.transport
        sock = getattr(transport, "_sock", None)
        self._sendto = sock.sendto if sock is not None else transport.sendto
        session = int(ffi.cast("uintptr_t", self._session._srtp[0]))
        outbox.bind(lane, session, sock, self._addr)
        self._lane = lane

    def send_unqueued(self, length: int) -> None:
        """Send the RTP datagram of ``length`` bytes the outbox left to the caller (a relayed
        pair); if it cannot be sent, it comes off the lane's counters."""
        if not self._send_now(length):
            lane = self._lane
            lane.packets_sent -= 1
            lane.octets_sent -= len(OUTBOX.loaded or b"") - 12

    def send_rtcp(self, packet: bytes) -> bool:
        """Protect and send one RTCP packet at once."""
        length = OUTBOX.send_rtcp(self._lane, packet)
        OUTBOX.flush()
        return length > 0 or (length < 0 and self._send_now(-length))

    def _send_now(self, length: int) -> bool:
        try:
            self._sendto(OUTBOX.unqueued(length), self._addr)
        except OSError:
            return False
        return True


def flush_output() -> None:
    """Send what :class:`RtpOutput` queued (after each fan-out, and each batch of
    retransmissions)."""
    OUTBOX.flush()
