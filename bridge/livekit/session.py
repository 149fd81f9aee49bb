"""One client's signalling session: its WebSocket, translated into SFU calls one way and room
events into ``SignalResponse`` messages the other way.

The two protocol versions differ only in their peer connections and in who offers:

* v0 (``/rtc``, :class:`DualPCSession`): the client offers on its publisher connection, the
  SFU offers on the subscriber connection and renegotiates it whenever what the client
  receives changes.
* v1 (``/rtc/v1``, :class:`SinglePCSession`): one connection, and only the client offers (its
  first offer comes with the join request, with receive-only sections added in advance). When
  what the client receives changes, the SFU asks it to offer again with
  ``media_sections_requirement``, naming how many more sections to add; each answer maps the
  sections' mids to track sids (``mid_to_track_id``), because the client's own receivers do not
  carry the server's track ids.

Everything the client sends is validated; a violation closes this session only, with a reason.

A session outlives its connection when that drops: a resume attaches a new WebSocket, what was
queued meanwhile is sent there, and the peer connections, tracks and subscriptions carry on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable
import asyncio
import contextlib
import json
import logging
import re
import time

from aiohttp import WSCloseCode, WSMsgType, web
from livekit.protocol import models, rtc

from sfu import Participant, TrackInfo, TrackKind, Transport, TransportRole

from ..focus.tokens import FocusGrant, FocusTokens
from .ids import new_sid
from .layers import arriving_layers, quality_layer
from .protocol import (
    MID_LINE,
    PROTOCOL_VERSION,
    ProtocolViolation,
    check_sdp,
    decode_request,
    encode_response,
)
from .room import LiveKitRoom, RoomParticipant

if TYPE_CHECKING:
    from sfu import MediaSettings

log = logging.getLogger("mau.livekit.session")

SERVER_VERSION = "1.9.0"
"""The LiveKit server version whose protocol this signalling follows."""
PING_INTERVAL_S = 5
PING_TIMEOUT_S = 15
MAX_QUEUED_RESPONSES = 1000
"""A client this far behind is not reading; it is dropped rather than buffered forever."""
_MSID = re.compile(r"^a=msid:\S+ (\S+)", re.MULTILINE)
_TRACK_TYPES = {models.TrackType.AUDIO: TrackKind.AUDIO, models.TrackType.VIDEO: TrackKind.VIDEO}


def offered_track_ids(sdp: str) -> dict[str, str]:
    """mid -> the sender's track id (``a=msid``), which livekit-client sets to the ``cid`` of
    its ``add_track`` request."""
    found = {}
    for section in sdp.split("\nm=")[1:]:
        mid, msid = MID_LINE.search(section), _MSID.search(section)
        if mid and msid:
            found[mid.group(1)] = msid.group(1)
    return found


class SignalSession(ABC):
    """What both protocol versions share; subclasses lay out the transports and negotiate."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        room: LiveKitRoom,
        me: RoomParticipant,
        participant: Participant,
        grant: FocusGrant,
        tokens: FocusTokens,
        media: MediaSettings,
        may_publish: Callable[[], Awaitable[bool]],
    ) -> None:
        """``may_publish`` decides, from the room's current state, whether the participant may
        publish now, and applies the answer to the SFU."""
        self.ws = ws
        self.room = room
        self.me = me
        self.participant = participant
        self.grant = grant
        self._tokens = tokens
        self._media = media
        self._may_publish = may_publish
        self.offered, self.receiving = self._add_transports()
        """The transport the client offers on, and the one its subscriptions are sent on."""
        self._pending: dict[str, models.TrackInfo] = {}
        """Tracks announced with add_track, by cid, until media for them is negotiated."""
        self._announced: dict[str, models.TrackInfo] = {}
        """Tracks whose media was negotiated, by SFU track id (= LiveKit track sid)."""
        self._outbox: asyncio.Queue[rtc.SignalResponse | None] = asyncio.Queue()
        self._unsent: deque[rtc.SignalResponse] = deque()
        """Taken from the outbox but not sent when a connection was lost: sent first next."""
        self._writer: asyncio.Task[None] | None = None
        self._negotiating = False
        self._negotiate_again = False
        self._last_ping = time.monotonic()
        self._close_reason: str | None = None
        self._connection_changed = asyncio.Event()
        """Set when the client resumes on a new connection, or a connection or the session
        ends."""
        self._tasks: set[asyncio.Task[None]] = set()

    @abstractmethod
    def _add_transports(self) -> tuple[Transport, Transport]:
        """The transports of :attr:`offered` and :attr:`receiving` (may be the same one)."""

    @abstractmethod
    async def _start(self) -> None:
        """Begin negotiating, once the join response is on its way."""

    @abstractmethod
    async def _negotiate(self) -> None:
        """Start renegotiating :attr:`receiving`; the client completes it."""

    @abstractmethod
    async def _on_answer(self, answer: rtc.SessionDescription) -> None: ...

    @abstractmethod
    async def _on_resumed(self) -> None:
        """Catch up after a resume (the session's state itself carried over)."""

    # ------------------------------------------------------------------ lifecycle

    @property
    def ended(self) -> bool:
        """The client left, broke the protocol or was removed: no connection continues it."""
        return self._close_reason is not None

    @property
    def end_reason(self) -> str:
        return self._close_reason or "connection lost"

    async def run(self) -> None:
        """Serve the client on its first connection until it leaves, breaks the protocol or
        is removed, or the connection drops (then :meth:`resume` may continue the session)."""
        self.post(rtc.SignalResponse(join=self._join_response()))
        self._spawn(self._refresh_token())
        await self._serve(self.ws, self._start)

    async def resume(self, ws: web.WebSocketResponse) -> None:
        """Continue on a new connection of the same client (livekit-client's resume, after
        its connection dropped or looked dead to it): transports, published tracks and
        subscriptions stay as they are, so the others see nothing happen. The client gets a
        reconnect response first (it drops anything else that comes first), then what was
        queued meanwhile, and serves until this connection ends too."""
        previous, self.ws = self.ws, ws
        if self._writer is not None:
            self._writer.cancel()  # what it has not sent goes to the new connection
        self._connection_changed.set()
        if not previous.closed:  # half-open: closing it may wait for its timeout
            self._spawn(self._close(previous))
        join = self._join_response()
        reconnect = rtc.ReconnectResponse(
            ice_servers=join.ice_servers, server_info=join.server_info
        )
        try:
            await ws.send_bytes(encode_response(rtc.SignalResponse(reconnect=reconnect)))
        except (ConnectionError, RuntimeError):
            return
        log.info("Session %s resumed on a new connection", self.me.sid)
        await self._serve(ws, self._on_resumed)

    async def resumed_within(self, ws: web.WebSocketResponse, timeout_s: float) -> bool:
        """After ``ws`` dropped: whether the client resumed on a new connection within
        ``timeout_s`` (False once the session ended meanwhile)."""
        self._connection_changed.clear()
        if self.ws is ws and not self.ended:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._connection_changed.wait(), timeout_s)
        return self.ws is not ws and not self.ended

    async def _serve(
        self, ws: web.WebSocketResponse, start: Callable[[], Awaitable[None]]
    ) -> None:
        """Read one connection's requests and write the queued responses to it."""
        self._last_ping = time.monotonic()
        self._writer = writer = asyncio.create_task(self._write_responses(ws))
        pings = asyncio.create_task(self._watch_pings(ws))
        try:
            await start()
            async for message in ws:
                if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.ERROR):
                    break
                await self._handle(decode_request(message))
                if self._close_reason is not None:
                    break
        except ProtocolViolation as e:
            log.info("Closing session %s: %s", self.me.sid, e)
            self._close_reason = str(e)
            await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=str(e).encode()[:123])
        finally:
            pings.cancel()
            if self._close_reason is None or self.ws is not ws:
                writer.cancel()  # what is still queued waits for the next connection
            else:
                for task in self._tasks:
                    task.cancel()
                self._outbox.put_nowait(None)
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer
            if not ws.closed:
                await ws.close()
            self._connection_changed.set()

    def post(self, response: rtc.SignalResponse) -> None:
        """Queue a message for the client, in order."""
        if self._outbox.qsize() >= MAX_QUEUED_RESPONSES:
            self.disconnected("signalling backlog: the client is not reading")
            return
        self._outbox.put_nowait(response)

    def disconnected(self, reason: str) -> None:
        """The SFU removed this participant (transport failure, kick, leave): end the session."""
        if self._close_reason is None:
            self._close_reason = reason
            self.post(
                rtc.SignalResponse(
                    leave=rtc.LeaveRequest(
                        can_reconnect=False,
                        reason=models.DisconnectReason.PARTICIPANT_REMOVED,
                        action=rtc.LeaveRequest.Action.DISCONNECT,
                    )
                )
            )
            self._outbox.put_nowait(None)
            self._connection_changed.set()

    async def _write_responses(self, ws: web.WebSocketResponse) -> None:
        """Send what is queued, in order; a message the connection fails to take is kept for
        the next connection, if the client resumes."""
        while True:
            response = self._unsent.popleft() if self._unsent else await self._outbox.get()
            if response is None:
                break
            try:
                await ws.send_bytes(encode_response(response))
            except (ConnectionError, RuntimeError, asyncio.CancelledError):
                self._unsent.appendleft(response)
                raise
        if self._close_reason is not None and not ws.closed:
            await ws.close(code=WSCloseCode.OK, message=self._close_reason.encode()[:123])

    @staticmethod
    async def _close(ws: web.WebSocketResponse) -> None:
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"resumed on a new connection")

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch_pings(self, ws: web.WebSocketResponse) -> None:
        """A client that stopped pinging has lost this connection even if it looks open."""
        while True:
            await asyncio.sleep(PING_INTERVAL_S)
            if time.monotonic() - self._last_ping > PING_TIMEOUT_S:
                log.info("Session %s stopped pinging", self.me.sid)
                await ws.close(code=WSCloseCode.GOING_AWAY, message=b"ping timeout")
                return

    async def _refresh_token(self) -> None:
        """Hand out a fresh token before the current one expires, so reconnects still work."""
        while True:
            await asyncio.sleep(max(self._tokens.lifetime_s // 2, 30))
            self.post(rtc.SignalResponse(refresh_token=self._tokens.issue(self.grant)))

    def _join_response(self) -> rtc.JoinResponse:
        return rtc.JoinResponse(
            room=self.room.info(),
            participant=self.me.info(),
            other_participants=self.room.others(self.me.sid),
            server_version=SERVER_VERSION,
            server_info=models.ServerInfo(
                edition=models.ServerInfo.Edition.Standard,
                version=SERVER_VERSION,
                protocol=PROTOCOL_VERSION,
                node_id="matrix-conference-bridge",
            ),
            ice_servers=[
                rtc.ICEServer(
                    urls=list(server.urls),
                    username=server.username or "",
                    credential=server.credential or "",
                )
                for server in self._media.ice_servers_for(self.grant.user_id, time.time())
            ],
            subscriber_primary=False,
            ping_interval=PING_INTERVAL_S,
            ping_timeout=PING_TIMEOUT_S,
            # The SFU forwards VP8 (with picture-id rewriting on switches) and Opus.
            enabled_publish_codecs=[
                models.Codec(mime="video/VP8"),
                models.Codec(mime="audio/opus"),
            ],
        )

    # ------------------------------------------------------------------ client requests

    async def _handle(self, request: rtc.SignalRequest) -> None:
        kind = request.WhichOneof("message")
        if kind == "offer":
            await self._on_offer(request.offer)
        elif kind == "answer":
            await self._on_answer(request.answer)
        elif kind == "trickle":
            await self._on_trickle(request.trickle)
        elif kind == "add_track":
            await self._on_add_track(request.add_track)
        elif kind == "mute":
            self._on_mute(request.mute)
        elif kind == "subscription":
            self._on_subscription(request.subscription)
        elif kind == "track_setting":
            self._on_track_setting(request.track_setting)
        elif kind == "update_metadata":
            self._on_update_metadata(request.update_metadata)
        elif kind == "sync_state":
            self._on_sync_state(request.sync_state)
        elif kind == "leave":
            self._close_reason = "left"
        elif kind == "ping":
            self._last_ping = time.monotonic()
            self.post(rtc.SignalResponse(pong=int(time.time() * 1000)))
        elif kind == "ping_req":
            self._last_ping = time.monotonic()
            self.post(
                rtc.SignalResponse(
                    pong_resp=rtc.Pong(
                        last_ping_timestamp=request.ping_req.timestamp,
                        timestamp=int(time.time() * 1000),
                    )
                )
            )
        else:
            # Layer, codec and data-track requests: nothing this SFU acts on.
            log.debug("Session %s: ignoring %s", self.me.sid, kind)

    async def _on_offer(self, offer: rtc.SessionDescription) -> None:
        if offer.type != "offer":
            raise ProtocolViolation(f"offer has type {offer.type!r}")
        check_sdp(offer.sdp, "offer")
        await self._may_publish()  # the transport refuses every section the client sends on
        track_ids = {
            mid: self._pending[cid].sid
            for mid, cid in offered_track_ids(offer.sdp).items()
            if cid in self._pending
        }
        try:
            answer = await self.offered.accept_offer(offer.sdp, track_ids)
        except Exception as e:
            raise ProtocolViolation(f"bad SDP offer: {e}") from e
        description = self._description("answer", answer, self.offered, offer.id)
        self.post(rtc.SignalResponse(answer=description))

    async def _on_trickle(self, trickle: rtc.TrickleRequest) -> None:
        transport = (
            self.receiving if trickle.target == rtc.SignalTarget.SUBSCRIBER else self.offered
        )
        try:
            init = json.loads(trickle.candidateInit)
            candidate = init.get("candidate")
            if not candidate:  # end of candidates
                await transport.add_remote_candidate(None)
                return
            await transport.add_remote_candidate(
                str(candidate), init.get("sdpMid"), int(init.get("sdpMLineIndex") or 0)
            )
        except (ValueError, TypeError, AttributeError) as e:
            raise ProtocolViolation("malformed ICE candidate") from e

    async def _on_add_track(self, request: rtc.AddTrackRequest) -> None:
        if request.type not in _TRACK_TYPES:
            raise ProtocolViolation("add_track: only audio and video tracks")
        if not request.cid or request.cid in self._pending:
            raise ProtocolViolation("add_track: missing or repeated cid")
        if len(self._pending) + len(self._announced) >= self._media.max_tracks_per_participant:
            raise ProtocolViolation("add_track: too many tracks")
        if not await self._may_publish():
            self.post(
                rtc.SignalResponse(
                    request_response=rtc.RequestResponse(
                        reason=rtc.RequestResponse.Reason.NOT_ALLOWED,
                        message="publishing needs a higher power level in this room",
                        add_track=request,
                    )
                )
            )
            return
        track = models.TrackInfo(
            sid=new_sid("TR_"),
            type=request.type,
            name=request.name,
            muted=request.muted,
            width=request.width,
            height=request.height,
            source=request.source,
            disable_dtx=request.disable_dtx,
            stereo=request.stereo,
            disable_red=request.disable_red,
            layers=request.layers,
            encryption=request.encryption,
            stream=request.stream,
            audio_features=request.audio_features,
        )
        self._pending[request.cid] = track
        self.post(
            rtc.SignalResponse(
                track_published=rtc.TrackPublishedResponse(cid=request.cid, track=track)
            )
        )

    def _on_mute(self, request: rtc.MuteTrackRequest) -> None:
        if request.sid in self._announced:
            self.participant.set_muted(request.sid, request.muted)
            if not request.muted and any(
                track.track_id == request.sid and track.muted
                for track in self.participant.published
            ):  # held muted by a moderator: the client must show it still is
                self.room.request_mute(self.me.sid, request.sid)
            return
        for track in self._pending.values():
            if track.sid == request.sid:
                track.muted = request.muted

    def _on_subscription(self, request: rtc.UpdateSubscription) -> None:
        if not self.grant.video.can_subscribe:
            return
        sids = list(request.track_sids)
        for participant_tracks in request.participant_tracks:
            sids.extend(participant_tracks.track_sids)
        for sid in sids:
            if not request.subscribe:
                self.participant.unsubscribe(sid)
                continue
            try:
                self.participant.subscribe(sid, self.receiving.id)
            except LookupError:
                log.debug("Session %s: no track %s to subscribe to", self.me.sid, sid)

    def _on_track_setting(self, request: rtc.UpdateTrackSettings) -> None:
        """adaptiveStream pauses video the client does not display and sends the size of the
        element that shows it; without a size the client asks for a quality."""
        off = request.disabled or request.quality == models.VideoQuality.OFF
        for sid in request.track_sids:
            subscription = self.participant.subscription_for(sid)
            if subscription is None or subscription.source is None:
                continue
            subscription.set_paused(off)
            if request.width and request.height:
                subscription.prefer_size(request.width, request.height)
            elif not off:
                rids = subscription.source.info.layers
                subscription.prefer_layer(quality_layer(rids, request.quality))
        self.participant.viewing_changed()

    def _on_sync_state(self, state: rtc.SyncState) -> None:
        """After a resume the client restates what it wants to receive; the SFU kept what it
        publishes and its descriptions, so the rest is not needed."""
        self._on_subscription(state.subscription)
        for sid in state.track_sids_disabled:
            subscription = self.participant.subscription_for(sid)
            if subscription is not None:
                subscription.set_paused(True)

    def _on_update_metadata(self, request: rtc.UpdateParticipantMetadata) -> None:
        self.me.name = request.name or self.me.name
        self.me.metadata = request.metadata or self.me.metadata
        self.room.participant_changed(self.me)

    # ------------------------------------------------------------------ room events

    def negotiation_needed(self, transport_id: str) -> None:
        """What the client receives changed. One negotiation at a time: changes made meanwhile
        are negotiated once it completes."""
        if transport_id != self.receiving.id:
            return
        if self._negotiating:
            self._negotiate_again = True
        else:
            self._negotiating = True
            self._spawn(self._next_negotiation())

    async def _next_negotiation(self) -> None:
        self._negotiate_again = False
        await self._negotiate()

    async def _negotiated(self) -> None:
        """The client completed a negotiation (answered the SFU's offer, or offered again)."""
        if self._negotiate_again:
            await self._next_negotiation()
        else:
            self._negotiating = False

    @staticmethod
    def _description(
        kind: str, sdp: str, transport: Transport, offer_id: int = 0
    ) -> rtc.SessionDescription:
        """An SDP of ``transport`` for the client, with the track sid each section sends."""
        return rtc.SessionDescription(
            type=kind,
            sdp=sdp,
            id=offer_id,
            mid_to_track_id={
                subscription.mid: subscription.source.info.track_id
                for subscription in transport.subscriptions
                if subscription.mid is not None and subscription.source is not None
            },
        )

    def unpublished(self, track_id: str) -> None:
        self._announced.pop(track_id, None)

    def published(self, track: TrackInfo) -> models.TrackInfo | None:
        for cid, info in self._pending.items():
            if info.sid == track.track_id:
                del self._pending[cid]
                info.mime_type = track.codec
                info.mid = track.mid or ""
                layers = arriving_layers(info.layers, track.layers)
                del info.layers[:]
                info.layers.extend(layers)
                info.simulcast = len(layers) > 1
                info.codecs.append(
                    models.SimulcastCodecInfo(mime_type=track.codec, mid=info.mid, layers=layers)
                )
                if info.source == models.TrackSource.SCREEN_SHARE:
                    self.participant.set_screen_share(info.sid)
                self._announced[info.sid] = info
                return info
        return None


class DualPCSession(SignalSession):
    """Protocol v0: a publisher connection the client offers on, a subscriber connection the
    SFU offers on."""

    def _add_transports(self) -> tuple[Transport, Transport]:
        return (
            self.participant.add_transport(TransportRole.PUBLISHER),
            self.participant.add_transport(TransportRole.SUBSCRIBER),
        )

    async def _start(self) -> None:
        if self.participant.subscriptions:  # auto-subscribed to tracks already published
            self.negotiation_needed(self.receiving.id)

    async def _negotiate(self) -> None:
        sdp = await self.receiving.create_offer()
        self.post(rtc.SignalResponse(offer=self._description("offer", sdp, self.receiving)))

    async def _on_answer(self, answer: rtc.SessionDescription) -> None:
        if not self._negotiating or answer.type != "answer":
            raise ProtocolViolation("unexpected answer")
        check_sdp(answer.sdp, "answer")
        try:
            await self.receiving.accept_answer(answer.sdp)
        except Exception as e:
            raise ProtocolViolation(f"bad SDP answer: {e}") from e
        await self._negotiated()

    async def _on_resumed(self) -> None:
        """The SFU's offers still queued reach the client now; those it answered are done."""


class SinglePCSession(SignalSession):
    """Protocol v1: one connection, on which only the client offers."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        room: LiveKitRoom,
        me: RoomParticipant,
        participant: Participant,
        grant: FocusGrant,
        tokens: FocusTokens,
        media: MediaSettings,
        may_publish: Callable[[], Awaitable[bool]],
        join_request: rtc.JoinRequest,
    ) -> None:
        super().__init__(ws, room, me, participant, grant, tokens, media, may_publish)
        self._join_request = join_request

    def _add_transports(self) -> tuple[Transport, Transport]:
        transport = self.participant.add_transport(TransportRole.SINGLE)
        return transport, transport

    async def _start(self) -> None:
        """Tracks and the first offer may come with the join request (livekit-client sends the
        offer there, except on Firefox)."""
        for request in self._join_request.add_track_requests:
            await self._on_add_track(request)
        if self._join_request.HasField("publisher_offer"):
            await self._on_offer(self._join_request.publisher_offer)

    async def _negotiate(self) -> None:
        missing = self.receiving.missing_slots()
        requirement = rtc.MediaSectionsRequirement(
            num_audios=missing["audio"], num_videos=missing["video"]
        )
        self.post(rtc.SignalResponse(media_sections_requirement=requirement))

    async def _on_offer(self, offer: rtc.SessionDescription) -> None:
        """Each offer binds what waits for a section; the one asked for completes a
        negotiation. Subscriptions made before this session could ask (auto-subscribed at
        join) still lacking sections after an offer make the SFU ask for more."""
        await super()._on_offer(offer)
        if self._negotiating:
            await self._negotiated()
        elif any(self.receiving.missing_slots().values()):
            self.negotiation_needed(self.receiving.id)

    async def _on_answer(self, answer: rtc.SessionDescription) -> None:
        raise ProtocolViolation("unexpected answer: on one connection only the client offers")

    async def _on_resumed(self) -> None:
        """A request for sections may have been lost with the old connection: ask again (at
        worst the client adds a few sections it does not need)."""
        if self._negotiating:
            await self._negotiate()
