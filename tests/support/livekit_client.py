"""A LiveKit client on aiortc, speaking protocol v0 (``/rtc``, two peer connections) as
livekit-client does: add_track before publishing, answers the SFU's subscriber offers, pings.
It publishes marked media and decodes what it receives, so tests can check who got what."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
import asyncio
import time

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from livekit.protocol import models, rtc
import aiohttp

from .media import MarkedVideo, Received, ToneAudio, config, consume
from .waiting import eventually

PING_INTERVAL_S = 5


@dataclass
class RemoteParticipant:
    sid: str
    identity: str
    tracks: dict[str, models.TrackInfo] = field(default_factory=dict)
    version: int = 0


class LiveKitClient:
    def __init__(self, focus_url: str, token: str) -> None:
        self.focus_url = focus_url
        self.token = token
        self.join: rtc.JoinResponse | None = None
        self.participants: dict[str, RemoteParticipant] = {}
        self.received: dict[str, Received] = {}
        """By track sid (the msid track id of what the SFU sends)."""
        self.speakers: list[list[models.SpeakerInfo]] = []
        self.leave: rtc.LeaveRequest | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self.refreshed_tokens: list[str] = []
        self.pub_pc = RTCPeerConnection(config())
        self.sub_pc = RTCPeerConnection(config())
        self.sub_pc.on("track", self._on_track)
        self.audio: ToneAudio | None = None
        self._session = aiohttp.ClientSession()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._published: dict[str, asyncio.Future[models.TrackInfo]] = {}
        self._answers: dict[int, asyncio.Future[str]] = {}
        self._offer_id = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = asyncio.Event()

    @property
    def sid(self) -> str:
        assert self.join is not None
        return self.join.participant.sid

    @property
    def identity(self) -> str:
        assert self.join is not None
        return self.join.participant.identity

    async def connect(self, auto_subscribe: bool = True) -> rtc.JoinResponse:
        query = {
            "access_token": self.token,
            "auto_subscribe": "1" if auto_subscribe else "0",
            "sdk": "python-test",
            "protocol": "16",
        }
        self._ws = await self._session.ws_connect(f"{self.focus_url}/rtc", params=query)
        first = await self._ws.receive(timeout=10)
        response = rtc.SignalResponse.FromString(first.data)
        assert response.WhichOneof("message") == "join", response
        self.join = response.join
        for info in self.join.other_participants:
            self._update_participant(info)
        self._spawn(self._read())
        self._spawn(self._ping())
        return self.join

    async def send(self, request: rtc.SignalRequest) -> None:
        assert self._ws is not None
        await self._ws.send_bytes(request.SerializeToString())

    async def send_raw(self, data: bytes | str) -> None:
        assert self._ws is not None
        if isinstance(data, str):
            await self._ws.send_str(data)
        else:
            await self._ws.send_bytes(data)

    async def publish(self, luma: int | None = None, amplitude: float | None = None) -> None:
        """Announce the tracks with add_track, then negotiate the publisher connection."""
        tracks: list[tuple[MediaStreamTrack, rtc.AddTrackRequest]] = []
        if amplitude is not None:
            self.audio = ToneAudio(amplitude)
            tracks.append(
                (
                    self.audio,
                    rtc.AddTrackRequest(
                        cid=self.audio.id,
                        type=models.TrackType.AUDIO,
                        source=models.TrackSource.MICROPHONE,
                        name="microphone",
                    ),
                )
            )
        if luma is not None:
            video = MarkedVideo(luma)
            tracks.append(
                (
                    video,
                    rtc.AddTrackRequest(
                        cid=video.id,
                        type=models.TrackType.VIDEO,
                        source=models.TrackSource.CAMERA,
                        name="camera",
                        width=160,
                        height=120,
                    ),
                )
            )
        for track, request in tracks:
            future = asyncio.get_running_loop().create_future()
            self._published[request.cid] = future
            await self.send(rtc.SignalRequest(add_track=request))
            await asyncio.wait_for(future, 10)
            self.pub_pc.addTransceiver(track, direction="sendonly")
        await self.negotiate_publisher()

    async def negotiate_publisher(self) -> None:
        await self.pub_pc.setLocalDescription(await self.pub_pc.createOffer())
        answer = await self.offer_publisher(self.pub_pc.localDescription.sdp)
        await self.pub_pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))

    async def offer_publisher(self, sdp: str) -> str:
        self._offer_id += 1
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._answers[self._offer_id] = future
        offer = rtc.SessionDescription(type="offer", sdp=sdp, id=self._offer_id)
        await self.send(rtc.SignalRequest(offer=offer))
        return await asyncio.wait_for(future, 15)

    def video_from(self, client: LiveKitClient) -> Received:
        return self._received_from(client, models.TrackType.VIDEO)

    def audio_from(self, client: LiveKitClient) -> Received:
        return self._received_from(client, models.TrackType.AUDIO)

    def _received_from(self, client: LiveKitClient, kind: models.TrackType.ValueType) -> Received:
        remote = self.participants.get(client.sid)
        for sid, track in (remote.tracks if remote else {}).items():
            if track.type == kind and sid in self.received:
                return self.received[sid]
        return Received()

    async def wait_closed(self, timeout: float = 20.0) -> None:
        await asyncio.wait_for(self._closed.wait(), timeout)

    async def close(self, send_leave: bool = True) -> None:
        if send_leave and self._ws is not None and not self._ws.closed:
            leave = rtc.LeaveRequest(reason=models.DisconnectReason.CLIENT_INITIATED)
            await self.send(rtc.SignalRequest(leave=leave))
        for task in list(self._tasks):
            task.cancel()
        if self._ws is not None:
            await self._ws.close()
        await self.pub_pc.close()
        await self.sub_pc.close()
        await self._session.close()

    # ------------------------------------------------------------------ internals

    def _spawn(self, coroutine: object) -> None:
        task = asyncio.ensure_future(coroutine)  # type: ignore[call-overload]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ping(self) -> None:
        while True:
            await asyncio.sleep(PING_INTERVAL_S)
            now = int(time.time() * 1000)
            await self.send(rtc.SignalRequest(ping=now))
            await self.send(rtc.SignalRequest(ping_req=rtc.Ping(timestamp=now)))

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            while True:
                message = await self._ws.receive()
                if message.type == aiohttp.WSMsgType.BINARY:
                    await self._dispatch(rtc.SignalResponse.FromString(message.data))
                    continue
                if message.type == aiohttp.WSMsgType.CLOSE:
                    self.close_code, self.close_reason = message.data, message.extra or ""
                break
        finally:
            self._closed.set()

    async def _dispatch(self, response: rtc.SignalResponse) -> None:
        kind = response.WhichOneof("message")
        if kind == "track_published":
            future = self._published.pop(response.track_published.cid, None)
            if future is not None and not future.done():
                future.set_result(response.track_published.track)
        elif kind == "answer":
            future_answer = self._answers.pop(response.answer.id, None)
            if future_answer is not None:
                future_answer.set_result(response.answer.sdp)
        elif kind == "offer":
            await self.sub_pc.setRemoteDescription(
                RTCSessionDescription(response.offer.sdp, "offer")
            )
            await self.sub_pc.setLocalDescription(await self.sub_pc.createAnswer())
            answer = rtc.SessionDescription(type="answer", sdp=self.sub_pc.localDescription.sdp)
            await self.send(rtc.SignalRequest(answer=answer))
        elif kind == "update":
            for info in response.update.participants:
                self._update_participant(info)
        elif kind == "speakers_changed":
            self.speakers.append(list(response.speakers_changed.speakers))
        elif kind == "leave":
            self.leave = response.leave
        elif kind == "refresh_token":
            self.refreshed_tokens.append(response.refresh_token)

    def _update_participant(self, info: models.ParticipantInfo) -> None:
        if info.state == models.ParticipantInfo.State.DISCONNECTED:
            self.participants.pop(info.sid, None)
            return
        remote = self.participants.setdefault(info.sid, RemoteParticipant(info.sid, info.identity))
        if info.version < remote.version:
            return
        remote.version = info.version
        remote.tracks = {track.sid: track for track in info.tracks}

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._spawn(consume(track, self.received.setdefault(track.id, Received())))


async def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    async def probe() -> bool:
        return predicate()

    await eventually(probe, timeout=timeout, interval=0.1)
