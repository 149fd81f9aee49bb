"""Real aiortc client peers driving the SFU on loopback, with synthetic marked media
(:mod:`demo.media`). Clients use LiveKit's v0 layout: a publisher PC (client offers) and a
subscriber PC (SFU offers, renegotiated on ``NegotiationNeeded``).
"""

from __future__ import annotations

from typing import Any, TypeVar
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
import asyncio
import itertools
import time

from aiortc import (
    MediaStreamTrack,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.rtp import RtpPacket, is_rtcp

from demo.media import MarkedVideo, Received, ToneAudio, config, consume
from sfu import (
    SFU,
    Conference,
    Event,
    MediaSettings,
    NegotiationNeeded,
    Participant,
    TransportRole,
)

__all__ = ["MarkedVideo", "Received", "ToneAudio", "config"]  # re-exported for the tests
E = TypeVar("E")

FAST_CONSENT: dict[str, Any] = {"ice_consent_interval": 1.0, "ice_consent_failures": 3}
"""Consent timing of every SFU the tests start: aioice keeps it per process, so an SFU started
with other values would slow down the detection of vanished peers for all the others."""


class ClientPeer:
    """One participant's client: publishes marked media, decodes what it receives."""

    def __init__(self, room: Room, name: str, auto_subscribe: bool = True) -> None:
        self.name = name
        self.room = room
        self.participant: Participant = room.conference.join(name, auto_subscribe)
        self.publisher = self.participant.add_transport(TransportRole.PUBLISHER)
        self.subscriber = self.participant.add_transport(TransportRole.SUBSCRIBER)
        self.pub_pc = RTCPeerConnection(config())
        self.sub_pc = RTCPeerConnection(config())
        self.received: dict[str, Received] = {}
        self.audio: ToneAudio | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._negotiating = asyncio.Lock()
        self._dirty = False
        self.sub_pc.on("track", self._on_track)

    async def publish(self, luma: int | None = None, amplitude: float | None = None) -> None:
        if amplitude is not None:
            self.audio = ToneAudio(amplitude)
            self.pub_pc.addTransceiver(self.audio, direction="sendonly")
        if luma is not None:
            self.pub_pc.addTransceiver(MarkedVideo(luma), direction="sendonly")
        await self.pub_pc.setLocalDescription(await self.pub_pc.createOffer())
        ids = {t.mid: f"{self.name}-{t.kind}" for t in self.pub_pc.getTransceivers() if t.mid}
        answer = await self.publisher.accept_offer(self.pub_pc.localDescription.sdp, ids)
        await self.pub_pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))

    def renegotiate(self) -> None:
        """Coalescing renegotiation of the subscriber PC (SFU offers)."""
        self._dirty = True
        self._spawn(self._renegotiate())

    async def _renegotiate(self) -> None:
        async with self._negotiating:
            if not self._dirty or self.subscriber.state == "closed":
                return
            self._dirty = False
            offer = await self.subscriber.create_offer()
            await self.sub_pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
            await self.sub_pc.setLocalDescription(await self.sub_pc.createAnswer())
            await self.subscriber.accept_answer(self.sub_pc.localDescription.sdp)

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._spawn(consume(track, self.received.setdefault(track.id, Received())))

    def video_from(self, name: str) -> Received:
        return self.received.get(f"{name}-video", Received())

    def audio_from(self, name: str) -> Received:
        return self.received.get(f"{name}-audio", Received())

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def vanish(self) -> None:
        """Stop answering on the network without any goodbye (no DTLS close, no leave)."""
        for pc in (self.pub_pc, self.sub_pc):
            for transceiver in pc.getTransceivers()[:1]:
                await transceiver.sender.transport.transport.stop()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.pub_pc.close()
        await self.sub_pc.close()


def tap_sent_payloads(peer: ClientPeer) -> set[bytes]:
    """Record the RTP payloads a client's publisher PC sends (test-only aiortc tap)."""
    payloads: set[bytes] = set()
    dtls: Any = peer.pub_pc.getTransceivers()[0].sender.transport
    original = dtls._send_rtp

    async def send_rtp(data: bytes) -> None:
        if not is_rtcp(data):
            payloads.add(RtpPacket.parse(data).payload)
        await original(data)

    dtls._send_rtp = send_rtp
    return payloads


def tap_received_payloads(peer: ClientPeer) -> dict[int, set[bytes]]:
    """Record, per SSRC, the RTP payloads a client's subscriber PC receives."""
    payloads: dict[int, set[bytes]] = {}
    dtls: Any = peer.sub_pc.getTransceivers()[0].receiver.transport
    original = dtls._handle_rtp_data

    async def handle_rtp_data(data: bytes, arrival_time_ms: int) -> None:
        packet = RtpPacket.parse(data)
        payloads.setdefault(packet.ssrc, set()).add(packet.payload)
        await original(data, arrival_time_ms)

    dtls._handle_rtp_data = handle_rtp_data
    return payloads


class Room:
    """A conference plus its client peers; routes renegotiation requests to them."""

    def __init__(self, conference_factory: Callable[[Callable[[Event], None]], Conference]):
        self.events: list[Event] = []
        self.peers: dict[str, ClientPeer] = {}
        self.conference = conference_factory(self._on_event)

    def _on_event(self, event: Event) -> None:
        self.events.append(event)
        if isinstance(event, NegotiationNeeded):
            peer = self.peers.get(event.participant_id)
            if peer is not None and peer.subscriber.id == event.transport_id:
                peer.renegotiate()

    def add(self, name: str, auto_subscribe: bool = True) -> ClientPeer:
        peer = ClientPeer(self, name, auto_subscribe)
        self.peers[name] = peer
        # Subscriptions made at join time were announced before the peer was registered.
        if peer.participant.subscriptions:
            peer.renegotiate()
        return peer

    def events_of(self, kind: type[E]) -> list[E]:
        return [event for event in self.events if isinstance(event, kind)]

    async def close(self) -> None:
        for peer in self.peers.values():
            await peer.close()
        await self.conference.close()


async def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll ``predicate`` (generous timeout; tests assert on content, not on time)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached before timeout")
        await asyncio.sleep(0.05)


_conference_ids = itertools.count()


@asynccontextmanager
async def started_sfu(**settings: Any) -> AsyncIterator[SFU]:
    """An SFU on loopback that notices vanished peers within seconds; ``settings`` override
    other :class:`MediaSettings`."""
    server = SFU(
        MediaSettings(
            bind_addresses=("127.0.0.1",),
            **FAST_CONSENT,
            **settings,
        )
    )
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@asynccontextmanager
async def room_on(server: SFU) -> AsyncIterator[Room]:
    """A new conference of ``server`` with its client peers, closed afterwards."""
    conference_id = f"conf-{next(_conference_ids)}"
    room = Room(lambda on_event: server.create_conference(conference_id, on_event))
    try:
        yield room
    finally:
        await room.close()
        await server.close_conference(conference_id)
