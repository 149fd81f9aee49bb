"""A participant's WebRTC transport: one aiortc peer connection used only as a transport.

aiortc does ICE, DTLS-SRTP and SDP; this class takes the decrypted RTP/RTCP away from it,
demultiplexes inbound packets to published tracks by SSRC, routes subscriber feedback to
subscriptions, and starts/stops subscriptions as negotiation and connectivity allow.

Roles follow the signalling protocols that will drive it: the client offers on a ``PUBLISHER``
transport (LiveKit v0 publisher PC) and on a ``SINGLE`` one (LiveKit v1, legacy Matrix VoIP,
where the client pre-adds recvonly sections for what it wants to receive); the SFU offers on a
``SUBSCRIBER`` transport (LiveKit v0 subscriber PC).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
import asyncio
import enum
import logging
import struct
import time

from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.rtcconfiguration import RTCBundlePolicy
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtp import AnyRtcpPacket, RtcpRrPacket, RtcpSrPacket
from aiortc.sdp import candidate_from_sdp

from . import aiortc_seams as seams, rtcp, simulcast
from .bandwidth import DownlinkEstimator
from .config import MediaSettings
from .rtp import MalformedPacket
from .subscription import Subscription

if TYPE_CHECKING:
    from .track import Layer, PublishedTrack
    from .udp_mux import UdpMux

logger = logging.getLogger(__name__)
_SSRC = struct.Struct("!I")
_RECEIVING = ("recvonly", "sendrecv")
_SENDING = ("sendonly", "sendrecv")
SFU_TURN_USER = "sfu"
"""The user part of the SFU's own TURN usernames (clients' carry their Matrix user ID)."""


class TransportRole(enum.StrEnum):
    PUBLISHER = "publisher"
    SUBSCRIBER = "subscriber"
    SINGLE = "single"


@dataclass
class TransportStats:
    malformed_rtp: int = 0
    malformed_rtcp: int = 0
    unknown_rtp: int = 0


@dataclass(frozen=True)
class LocalCandidate:
    """An ICE candidate of the SFU, for adapters that trickle (they are also in the SDP)."""

    candidate: str
    sdp_mid: str | None
    sdp_mline_index: int


class TransportOwner(Protocol):
    """What a transport reports to its participant."""

    def _publish_incoming(
        self, transport: Transport, transceiver: RTCRtpTransceiver, track_id: str | None
    ) -> PublishedTrack | None: ...

    def _unpublish_incoming(self, track: PublishedTrack) -> None: ...

    def _publish_budget(self) -> int:
        """How many more streams the participant may publish (0 when it may not publish)."""

    def _transport_state_changed(self, transport: Transport, state: str) -> None: ...


class _SilentTrack(MediaStreamTrack):
    """Keeps a sender slot's aiortc send loop parked at no cost (it would poll without one)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._never: asyncio.Future[None] | None = None

    async def recv(self) -> None:  # type: ignore[override]
        self._never = asyncio.get_running_loop().create_future()
        await self._never


def rtc_configuration(settings: MediaSettings) -> RTCConfiguration:
    """Explicit ICE servers only: aiortc would otherwise use a public Google STUN server.

    TURN credentials are minted here, for each new connection: they are valid for the
    configured lifetime from the moment the connection allocates its relay."""
    servers = [
        RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
        for s in settings.ice_servers_for(SFU_TURN_USER, time.time())
    ]
    return RTCConfiguration(iceServers=servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


class Transport:
    """One peer connection of a participant."""

    def __init__(
        self,
        transport_id: str,
        role: TransportRole,
        owner: TransportOwner,
        settings: MediaSettings,
        udp_mux: UdpMux | None = None,
    ) -> None:
        self.id = transport_id
        self.role = role
        self.stats = TransportStats()
        self.bandwidth_estimate: int | None = None
        """Latest REMB from the client, in bit/s (None until one arrives)."""
        self.downlink = DownlinkEstimator()
        """What the client's downlink carries, from its REMB and receiver reports."""
        self.pc = RTCPeerConnection(rtc_configuration(settings))
        seams.share_certificate(self.pc)
        self._owner = owner
        self._settings = settings
        self._udp_mux = udp_mux
        self._inbound: dict[int, Layer] = {}
        self.simulcast_offers: dict[str, simulcast.SimulcastOffer] = {}
        """Simulcast sections of the client's last offer, by mid."""
        self._published: dict[RTCRtpTransceiver, PublishedTrack] = {}
        self._outbound: dict[int, Subscription] = {}
        self._subscriptions: list[Subscription] = []
        self._local_waiting: list[tuple[MediaStreamTrack, str]] = []
        self._local: dict[RTCRtpTransceiver, MediaStreamTrack] = {}
        self._hooked: set[RTCDtlsTransport] = set()
        self._closed = False
        self._connect_deadline: asyncio.TimerHandle | None = None
        self.pc.on("connectionstatechange", self._on_connection_state)

    @property
    def state(self) -> str:
        return self.pc.connectionState

    @property
    def subscriptions(self) -> list[Subscription]:
        return list(self._subscriptions)

    @property
    def connecting(self) -> bool:
        """Negotiated (so holding a UDP port and running ICE checks) but not yet connected."""
        return self._connect_deadline is not None

    # ------------------------------------------------------------------ signalling

    async def accept_offer(self, sdp: str, track_ids: Mapping[str, str] | None = None) -> str:
        """Apply the client's offer and return the SFU's answer.

        Media sections the client sends on become published tracks while the participant may
        publish, up to its track limit. ``track_ids`` maps a section's mid to the adapter's
        track id; given, it is also the list of sections the adapter announced, and any other
        section the client sends on is refused (answered ``inactive``). Without it every
        sending section is published as ``"{participant}/{mid}"``. Simulcast sections are
        answered so that every layer offered is received.
        """
        if self.role is TransportRole.SUBSCRIBER:
            raise RuntimeError("the SFU offers on a subscriber transport")
        offered_simulcast = simulcast.parse_offer(sdp)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        self.simulcast_offers = offered_simulcast
        if seams.follow_ice_restart(self.pc, sdp):
            logger.info("transport %s: ICE restart", self.id)
        await self._bind_offered_slots()
        self._admit_sections(track_ids)
        answer = await self.pc.createAnswer()
        seams.prepare_ice(self.pc, self._settings, self._udp_mux)
        await self.pc.setLocalDescription(answer)
        self._negotiated(track_ids or {})
        return simulcast.complete_answer(sdp, self.pc.localDescription.sdp)

    async def create_offer(self) -> str:
        """An offer for what the SFU sends (subscriber transport); apply the answer next."""
        if self.role is not TransportRole.SUBSCRIBER:
            raise RuntimeError("the client offers on this transport")
        offer = await self.pc.createOffer()
        seams.prepare_ice(self.pc, self._settings, self._udp_mux)
        await self.pc.setLocalDescription(offer)
        seams.share_descriptions(self.pc)
        self._await_connection()
        return self.pc.localDescription.sdp

    async def accept_answer(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        self._negotiated({})

    async def add_remote_candidate(
        self, candidate: str | None, sdp_mid: str | None = None, sdp_mline_index: int = 0
    ) -> None:
        """Trickle ICE in: ``candidate`` as in SDP (``candidate:...``); None ends them.

        Raises:
            ValueError: the candidate is malformed or comes after the end of candidates.
        """
        if candidate is None:
            await self.pc.addIceCandidate(None)
            return
        try:
            parsed = candidate_from_sdp(candidate.removeprefix("a=").removeprefix("candidate:"))
        except (ValueError, IndexError, AssertionError) as e:
            # aiortc's parser asserts on some malformed fields instead of raising ValueError.
            raise ValueError(f"malformed ICE candidate: {e!r}") from e
        parsed.sdpMid = sdp_mid
        parsed.sdpMLineIndex = sdp_mline_index
        await self.pc.addIceCandidate(parsed)

    def local_candidates(self) -> list[LocalCandidate]:
        """Trickle ICE out. aiortc gathers before answering/offering, so all are known here."""
        description = self.pc.localDescription
        if description is None:
            return []
        found: list[LocalCandidate] = []
        mid: str | None = None
        index = -1
        for line in description.sdp.splitlines():
            if line.startswith("m="):
                index += 1
                mid = None
            elif line.startswith("a=mid:"):
                mid = line[6:]
            elif line.startswith("a=candidate:") and index >= 0:
                found.append(LocalCandidate(line[2:], mid, index))
        return found

    # ------------------------------------------------------------------ subscriptions

    def add_subscription(self, subscriber_id: str, kind: str) -> Subscription:
        """A new outgoing stream; the caller must renegotiate the transport afterwards."""
        subscription = Subscription(subscriber_id, self.id, kind)
        self._subscriptions.append(subscription)
        if self.role is TransportRole.SUBSCRIBER:
            transceiver = self.pc.addTransceiver(_SilentTrack(kind), direction="sendonly")
            self._bind(subscription, transceiver)
        return subscription

    def add_local_track(self, track: MediaStreamTrack, stream_id: str) -> None:
        """Send a track produced in this process (encoded by aiortc), announced in ``stream_id``.

        On a client-offered transport it takes the next offered section of its kind; the caller
        must renegotiate a subscriber transport afterwards.
        """
        if self.role is TransportRole.SUBSCRIBER:
            transceiver = self.pc.addTransceiver(track, direction="sendonly")
            self._bind_local(transceiver, track, stream_id)
        else:
            self._local_waiting.append((track, stream_id))

    def _bind_local(
        self, transceiver: RTCRtpTransceiver, track: MediaStreamTrack, stream_id: str
    ) -> None:
        transceiver.sender.replaceTrack(track)
        seams.set_msid(transceiver.sender, stream_id, track.id)
        self._local[transceiver] = track

    def remove_subscription(self, subscription: Subscription) -> None:
        """Stop forwarding; the sender slot stays negotiated and is reused by the next one."""
        subscription.switch(None)

    def free_subscription(self, kind: str) -> Subscription | None:
        """An existing subscription of ``kind`` with no source, to reuse its sender slot."""
        for subscription in self._subscriptions:
            if subscription.kind == kind and subscription.source is None:
                return subscription
        return None

    def _bind(self, subscription: Subscription, transceiver: RTCRtpTransceiver) -> None:
        subscription.bind(transceiver)
        self._outbound[subscription.ssrc] = subscription
        # At once: a slot may wait for its negotiation a while (its subscriber renegotiates
        # one offer at a time), with a video receiver's ~100 KB of decoding state.
        seams.lighten_receiver(transceiver.receiver)

    async def _bind_offered_slots(self) -> None:
        """On a single transport, give waiting local tracks, then waiting subscriptions, the
        sections the client offered to receive on (its pre-added recvonly transceivers, or the
        sendrecv sections of a 1:1 call, which keep carrying the client's media in)."""
        waiting = [s for s in self._subscriptions if s.transceiver is None]
        for transceiver, offered in self._free_offered_slots():
            local = next((t for t in self._local_waiting if t[0].kind == transceiver.kind), None)
            subscription = next((s for s in waiting if s.kind == transceiver.kind), None)
            if local is not None:
                self._local_waiting.remove(local)
                transceiver.direction = offered
                self._bind_local(transceiver, *local)
            elif subscription is not None:
                waiting.remove(subscription)
                transceiver.direction = offered
                transceiver.sender.replaceTrack(_SilentTrack(transceiver.kind))
                self._bind(subscription, transceiver)

    def _admit_sections(self, track_ids: Mapping[str, str] | None) -> None:
        """Decide, before answering, which sections the client may send on: the one gate for
        every stream a participant publishes, whatever signalling brought the offer. A refused
        section is answered ``inactive`` (or ``sendonly`` where the SFU sends on it), so the
        client does not send, and nothing of it would be forwarded if it did."""
        budget = self._owner._publish_budget()
        sending_slots = {s.transceiver for s in self._subscriptions} | set(self._local)
        for transceiver in self.pc.getTransceivers():
            if transceiver in self._published:
                continue
            if seams.offered_direction(transceiver) not in _RECEIVING:
                continue
            allowed = budget > 0 and (track_ids is None or transceiver.mid in track_ids)
            sends = transceiver in sending_slots
            if allowed:
                budget -= 1
                transceiver.direction = "sendrecv" if sends else "recvonly"
            else:
                transceiver.direction = "sendonly" if sends else "inactive"

    def stop_receiving(self) -> None:
        """Unpublish everything received here (the participant lost the right to publish).
        Sections stay negotiated; a later offer may publish again once allowed."""
        for transceiver in list(self._published):
            self._drop_published(transceiver)

    def missing_slots(self) -> dict[str, int]:
        """Per kind, how many more sections the client must offer to receive on before every
        waiting local track and subscription has one (single transport; the SFU cannot add
        sections itself there, so the adapter asks the client for them)."""
        wanted = Counter(s.kind for s in self._subscriptions if s.transceiver is None)
        wanted.update(track.kind for track, _ in self._local_waiting)
        wanted.subtract(transceiver.kind for transceiver, _ in self._free_offered_slots())
        return {kind: max(0, wanted[kind]) for kind in ("audio", "video")}

    def _free_offered_slots(self) -> list[tuple[RTCRtpTransceiver, str]]:
        """Sections the client offered to receive on that nothing is bound to yet, with the
        direction offered."""
        bound = {s.transceiver for s in self._subscriptions} | set(self._local)
        free = []
        for transceiver in self.pc.getTransceivers():
            offered = seams.offered_direction(transceiver)
            if transceiver not in bound and offered in _SENDING:
                free.append((transceiver, str(offered)))
        return free

    # ------------------------------------------------------------------ negotiation results

    def _negotiated(self, track_ids: Mapping[str, str]) -> None:
        seams.share_descriptions(self.pc)
        self._await_connection()
        for transceiver in self.pc.getTransceivers():
            self._hook(transceiver.receiver.transport)
            seams.lighten_receiver(transceiver.receiver)
        for transceiver in self.pc.getTransceivers():
            receiving = transceiver.currentDirection in _RECEIVING
            track = self._published.get(transceiver)
            if receiving and track is None:
                mid = transceiver.mid or ""
                track = self._owner._publish_incoming(self, transceiver, track_ids.get(mid))
                if track is not None:
                    self._published[transceiver] = track
            elif not receiving and track is not None:
                self._drop_published(transceiver)
        self._update_subscriptions()

    def _drop_published(self, transceiver: RTCRtpTransceiver) -> None:
        track = self._published.pop(transceiver)
        for ssrc in [ssrc for ssrc, layer in self._inbound.items() if layer.track is track]:
            del self._inbound[ssrc]
        self._owner._unpublish_incoming(track)

    def _update_subscriptions(self) -> None:
        for subscription in self._subscriptions:
            transceiver = subscription.transceiver
            if transceiver is None:
                continue
            dtls = transceiver.sender.transport
            if transceiver.currentDirection in _SENDING and dtls.state == "connected":
                subscription.activate(dtls)
            else:
                subscription.deactivate()

    def _hook(self, dtls: RTCDtlsTransport) -> None:
        if dtls in self._hooked:
            return
        self._hooked.add(dtls)
        seams.hook_transport(
            dtls,
            on_rtp=lambda data: self._on_rtp(dtls, data),
            on_rtcp=self._on_rtcp,
            on_malformed_rtcp=self._on_malformed_rtcp,
        )
        dtls.on("statechange", self._update_subscriptions)

    def _await_connection(self) -> None:
        """Once negotiated, the transport has ``connect_timeout`` to connect, or fails."""
        if self._connect_deadline is None and self.pc.connectionState != "connected":
            self._connect_deadline = asyncio.get_running_loop().call_later(
                self._settings.connect_timeout, self._connect_timed_out
            )

    def _connect_timed_out(self) -> None:
        if self.pc.connectionState == "connected" or self._closed:
            return
        logger.info("transport %s did not connect in time", self.id)
        self._owner._transport_state_changed(self, "failed")

    def _on_connection_state(self) -> None:
        state = self.pc.connectionState
        if state != "new" and state != "connecting" and self._connect_deadline is not None:
            self._connect_deadline.cancel()
            self._connect_deadline = None
        if state in ("failed", "closed"):
            for subscription in self._subscriptions:
                subscription.deactivate()
        self._owner._transport_state_changed(self, state)

    # ------------------------------------------------------------------ packets

    def _on_rtp(self, dtls: RTCDtlsTransport, data: bytes) -> None:
        if len(data) < 12:
            self.stats.malformed_rtp += 1
            return
        ssrc = _SSRC.unpack_from(data, 8)[0]
        layer = self._inbound.get(ssrc)
        try:
            if layer is None:
                receiver = seams.identify_stream(dtls, data)
                track = next(
                    (t for tr, t in self._published.items() if tr.receiver is receiver), None
                )
                layer = track.stream_for(ssrc, data) if track is not None else None
                if layer is None:
                    self.stats.unknown_rtp += 1
                    return
                self._inbound[ssrc] = layer
            layer.receive(data, ssrc)
        except MalformedPacket:
            self.stats.malformed_rtp += 1

    def _on_rtcp(self, packet: AnyRtcpPacket) -> None:
        bitrate = rtcp.dispatch(packet, self._inbound, self._outbound)
        if bitrate is not None:
            self.bandwidth_estimate = bitrate
            self.downlink.on_congestion_remb(bitrate, time.monotonic())
        elif isinstance(packet, RtcpRrPacket | RtcpSrPacket):
            now = time.monotonic()
            for report in packet.reports:
                subscription = self._outbound.get(report.ssrc)
                if subscription is not None:
                    self.downlink.on_receiver_report(
                        report.fraction_lost, now, subscription.packets_in_report
                    )

    def _on_malformed_rtcp(self) -> None:
        self.stats.malformed_rtcp += 1

    # ------------------------------------------------------------------ teardown

    async def close(self) -> None:
        """Release everything, even after a negotiation that failed half-way (aiortc may then
        raise while closing): no track stays published and no socket stays bound."""
        if self._closed:
            return
        self._closed = True
        if self._connect_deadline is not None:
            self._connect_deadline.cancel()
            self._connect_deadline = None
        for subscription in self._subscriptions:
            subscription.close()
        self._subscriptions.clear()
        self._outbound.clear()
        self._local_waiting.clear()
        self._local.clear()
        for transceiver in list(self._published):
            self._drop_published(transceiver)
        self._inbound.clear()
        self.pc.remove_all_listeners()
        try:
            await self.pc.close()
        except Exception:
            logger.warning("transport %s did not close cleanly", self.id, exc_info=True)
        finally:
            seams.release_sockets(self.pc)
        for dtls in self._hooked:
            dtls.remove_all_listeners()
        self._hooked.clear()
