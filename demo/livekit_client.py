"""A LiveKit client on aiortc, speaking protocol v0 (``/rtc``, two peer connections) or v1
(``/rtc/v1``, one) as livekit-client does: add_track before publishing, pings; on v0 it answers
the SFU's subscriber offers, on v1 it sends its first offer (receive-only sections added in
advance) with the join request, names received tracks by the answers' ``mid_to_track_id`` and
adds sections and offers again when the SFU sends ``media_sections_requirement``. It publishes
marked media and decodes what it receives, so tests can check who got what."""

from __future__ import annotations

from typing import Literal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
import asyncio
import base64
import gzip
import time

from aiortc import MediaStreamTrack, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from livekit.protocol import models, rtc
import aiohttp

from .bridge_process import BridgeProcess
from .media import MarkedVideo, Received, ToneAudio, config, consume
from .synapse import MatrixUser, Synapse
from .waiting import eventually

PING_INTERVAL_S = 5
Protocol = Literal["v0", "v1"]


async def focus_token(bridge: BridgeProcess, synapse: Synapse, user: MatrixUser, room: str) -> str:
    """A LiveKit token for ``room`` through the real flow: Matrix OpenID, then ``/sfu/get``."""
    return (await focus_grant(bridge, synapse, user, room))[1]


async def focus_grant(
    bridge: BridgeProcess, synapse: Synapse, user: MatrixUser, room: str
) -> tuple[str, str]:
    """The LiveKit URL (where the call's media is) and token :func:`focus_token` gets."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{bridge.focus_url}/sfu/get",
            json={
                "room": room,
                "openid_token": synapse.openid_token(user),
                "device_id": user.device_id,
            },
        ) as response,
    ):
        body = await response.json()
        assert response.status == 200, body
        return str(body["url"]), str(body["jwt"])


@dataclass
class RemoteParticipant:
    sid: str
    identity: str
    tracks: dict[str, models.TrackInfo] = field(default_factory=dict)
    version: int = 0
    kind: int = models.ParticipantInfo.Kind.STANDARD


class LiveKitClient:
    def __init__(
        self,
        focus_url: str,
        token: str,
        protocol: Protocol = "v0",
        media_sections: tuple[int, int] = (3, 3),
    ) -> None:
        """``media_sections``: the audio and video sections a v1 client adds in advance to
        receive on (livekit-client adds three of each)."""
        self.focus_url = focus_url
        self.token = token
        self.protocol = protocol
        self.media_sections = media_sections
        self.join: rtc.JoinResponse | None = None
        self.participants: dict[str, RemoteParticipant] = {}
        self.received: dict[str, Received] = {}
        """By track sid (the msid track id of what the SFU sends)."""
        self.speakers: list[list[models.SpeakerInfo]] = []
        self.leave: rtc.LeaveRequest | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self.refreshed_tokens: list[str] = []
        self.refusals: list[rtc.RequestResponse] = []
        self.mutes: list[rtc.MuteTrackRequest] = []
        self.qualities: dict[str, models.ConnectionQuality] = {}
        """Latest connection quality announced per participant sid."""
        """What the server asked us to mute (a moderator's mute)."""
        self.own_tracks: dict[models.TrackType, str] = {}
        """Sids of the tracks we published, by type."""
        self.unpublished: list[str] = []
        """Sids of own tracks the SFU unpublished."""
        self.permission: models.ParticipantPermission | None = None
        """What the SFU says we may do: from the join, then from updates about ourselves."""
        self.requirements: list[rtc.MediaSectionsRequirement] = []
        self.departures: list[str] = []
        """Sids of participants announced as gone, in order."""
        self.reconnects: list[rtc.ReconnectResponse] = []
        self.auto_subscribe = True
        self.pub_pc, self.sub_pc = self._connections(())
        """The connection media is sent on, and the one it is received on (on v1, the same)."""
        self.audio: ToneAudio | None = None
        self._session = aiohttp.ClientSession()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._published: dict[str, asyncio.Future[models.TrackInfo]] = {}
        self._answers: dict[int, asyncio.Future[rtc.SessionDescription]] = {}
        self._offer_id = 0
        self._mid_to_track_id: dict[str, str] = {}
        self._negotiation = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._signal_tasks: list[asyncio.Task[None]] = []
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
        self.auto_subscribe = auto_subscribe
        if self.protocol == "v1":
            return await self._connect_single_pc(auto_subscribe)
        query = {
            "access_token": self.token,
            "auto_subscribe": "1" if auto_subscribe else "0",
            "sdk": "python-test",
            "protocol": "16",
        }
        return await self._open("/rtc", query)

    async def _connect_single_pc(self, auto_subscribe: bool) -> rtc.JoinResponse:
        """Join with the first offer, answered after the join response."""
        audios, videos = self.media_sections
        self._add_media_sections(audios, videos)
        self.pub_pc.createDataChannel("_reliable")
        async with self._negotiation:
            await self.pub_pc.setLocalDescription(await self.pub_pc.createOffer())
            offer = self._next_offer(self.pub_pc.localDescription.sdp)
            join_request = rtc.JoinRequest(
                client_info=models.ClientInfo(sdk=models.ClientInfo.SDK.JS, protocol=16),
                connection_settings=rtc.ConnectionSettings(auto_subscribe=auto_subscribe),
                publisher_offer=offer,
            )
            wrapped = rtc.WrappedJoinRequest(
                compression=rtc.WrappedJoinRequest.Compression.GZIP,
                join_request=gzip.compress(join_request.SerializeToString()),
            )
            query = {
                "access_token": self.token,
                "join_request": base64.urlsafe_b64encode(wrapped.SerializeToString()).decode(),
            }
            join = await self._open("/rtc/v1", query)
            await self._apply_answer(await self._answer_to(offer))
        return join

    async def _open(self, path: str, query: dict[str, str]) -> rtc.JoinResponse:
        response = await self._open_socket(path, query)
        assert response.WhichOneof("message") == "join", response
        self.join = response.join
        if self.protocol == "v0" and self.join.ice_servers:
            # As livekit-client, which makes its v0 connections after the join, with the ICE
            # servers (and TURN credentials) it names; v1 offers before it knows them.
            self.pub_pc, self.sub_pc = self._connections(
                [
                    RTCIceServer(list(s.urls), s.username or None, s.credential or None)
                    for s in self.join.ice_servers
                ]
            )
        self.permission = self.join.participant.permission
        for info in self.join.other_participants:
            self._update_participant(info)
        self._listen()
        return self.join

    async def _open_socket(self, path: str, query: dict[str, str]) -> rtc.SignalResponse:
        """A new signalling connection, and the first message on it."""
        self._closed.clear()
        self._ws = await self._session.ws_connect(f"{self.focus_url}{path}", params=query)
        first = await self._ws.receive(timeout=10)
        return rtc.SignalResponse.FromString(first.data)

    async def drop_connection(self) -> None:
        """Lose the signalling connection as a network change does: no leave; the peer
        connections stay."""
        for task in self._signal_tasks:
            task.cancel()
        assert self._ws is not None
        await self._ws.close()

    async def resume(self) -> rtc.SignalResponse:
        """Reconnect as livekit-client resumes: the same token, ``reconnect`` with the
        participant sid, then ``sync_state`` and a new publisher offer (livekit-client's
        offer restarts ICE; aiortc's cannot). Returns the first message: ``reconnect`` when
        the session continues, ``leave`` when the client must join afresh."""
        if self.protocol == "v1":
            join_request = rtc.JoinRequest(
                client_info=models.ClientInfo(sdk=models.ClientInfo.SDK.JS, protocol=16),
                connection_settings=rtc.ConnectionSettings(auto_subscribe=self.auto_subscribe),
                reconnect=True,
                participant_sid=self.sid,
                reconnect_reason=models.ReconnectReason.RR_SIGNAL_DISCONNECTED,
            )
            wrapped = rtc.WrappedJoinRequest(join_request=join_request.SerializeToString())
            path, query = (
                "/rtc/v1",
                {
                    "access_token": self.token,
                    "join_request": base64.urlsafe_b64encode(wrapped.SerializeToString()).decode(),
                },
            )
        else:
            path, query = (
                "/rtc",
                {
                    "access_token": self.token,
                    "auto_subscribe": "1" if self.auto_subscribe else "0",
                    "reconnect": "1",
                    "sid": self.sid,
                    "reconnect_reason": str(models.ReconnectReason.RR_SIGNAL_DISCONNECTED),
                },
            )
        first = await self._open_socket(path, query)
        if first.WhichOneof("message") != "reconnect":
            return first
        self.reconnects.append(first.reconnect)
        self._listen()
        await self.send(rtc.SignalRequest(sync_state=rtc.SyncState()))
        if self.protocol == "v1" or self.pub_pc.getTransceivers():
            await self.negotiate_publisher()
        return first

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
        """Offer on the publisher connection (on v1 the only one), one offer at a time."""
        async with self._negotiation:
            await self.pub_pc.setLocalDescription(await self.pub_pc.createOffer())
            await self._apply_answer(await self.offer_publisher(self.pub_pc.localDescription.sdp))

    async def offer_publisher(self, sdp: str) -> rtc.SessionDescription:
        offer = self._next_offer(sdp)
        await self.send(rtc.SignalRequest(offer=offer))
        return await self._answer_to(offer)

    def _next_offer(self, sdp: str) -> rtc.SessionDescription:
        self._offer_id += 1
        self._answers[self._offer_id] = asyncio.get_running_loop().create_future()
        return rtc.SessionDescription(type="offer", sdp=sdp, id=self._offer_id)

    async def _answer_to(self, offer: rtc.SessionDescription) -> rtc.SessionDescription:
        return await asyncio.wait_for(self._answers[offer.id], 15)

    async def _apply_answer(self, answer: rtc.SessionDescription) -> None:
        if self.protocol == "v1":  # before the tracks it names are announced
            self._mid_to_track_id = dict(answer.mid_to_track_id)
        await self.pub_pc.setRemoteDescription(RTCSessionDescription(answer.sdp, "answer"))

    def _add_media_sections(self, audios: int, videos: int) -> None:
        for kind, count in (("audio", audios), ("video", videos)):
            for _ in range(count):
                self.pub_pc.addTransceiver(kind, direction="recvonly")

    def video_from(self, sender: LiveKitClient | str) -> Received:
        """What we decoded of a client's (or, by sid, any participant's) camera."""
        return self._received_from(sender, models.TrackType.VIDEO)

    def audio_from(self, sender: LiveKitClient | str) -> Received:
        return self._received_from(sender, models.TrackType.AUDIO)

    def _received_from(self, sender: LiveKitClient | str, kind: models.TrackType) -> Received:
        remote = self.participants.get(sender if isinstance(sender, str) else sender.sid)
        for sid, track in (remote.tracks if remote else {}).items():
            if track.type == kind and sid in self.received:
                return self.received[sid]
        return Received()

    async def set_muted(self, kind: models.TrackType, muted: bool) -> None:
        """Ask to (un)mute our track of ``kind``, as livekit-client does on a mute button."""
        request = rtc.MuteTrackRequest(sid=self.own_tracks[kind], muted=muted)
        await self.send(rtc.SignalRequest(mute=request))

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
        for pc in {self.pub_pc, self.sub_pc}:
            await pc.close()
        await self._session.close()

    # ------------------------------------------------------------------ internals

    def _connections(
        self, ice_servers: Sequence[RTCIceServer]
    ) -> tuple[RTCPeerConnection, RTCPeerConnection]:
        publisher = RTCPeerConnection(config(ice_servers))
        subscriber = publisher if self.protocol == "v1" else RTCPeerConnection(config(ice_servers))
        subscriber.on("track", self._on_track)
        return publisher, subscriber

    def _spawn(self, coroutine: object) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coroutine)  # type: ignore[call-overload]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _listen(self) -> None:
        """Read and ping on the current signalling connection."""
        self._signal_tasks = [self._spawn(self._read()), self._spawn(self._ping())]

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
                track = response.track_published.track
                self.own_tracks[track.type] = track.sid
                future.set_result(track)
        elif kind == "answer":
            future_answer = self._answers.pop(response.answer.id, None)
            if future_answer is not None:
                future_answer.set_result(response.answer)
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
        elif kind == "media_sections_requirement":
            requirement = response.media_sections_requirement
            self.requirements.append(requirement)
            self._add_media_sections(requirement.num_audios, requirement.num_videos)
            self._spawn(self.negotiate_publisher())
        elif kind == "speakers_changed":
            self.speakers.append(list(response.speakers_changed.speakers))
        elif kind == "leave":
            self.leave = response.leave
        elif kind == "refresh_token":
            self.refreshed_tokens.append(response.refresh_token)
        elif kind == "request_response":
            self.refusals.append(response.request_response)
        elif kind == "mute":
            self.mutes.append(response.mute)
        elif kind == "connection_quality":
            for update in response.connection_quality.updates:
                self.qualities[update.participant_sid] = update.quality
        elif kind == "track_unpublished":
            self.unpublished.append(response.track_unpublished.track_sid)

    def _update_participant(self, info: models.ParticipantInfo) -> None:
        if self.join is not None and info.sid == self.sid:
            self.permission = info.permission
            return
        if info.state == models.ParticipantInfo.State.DISCONNECTED:
            self.participants.pop(info.sid, None)
            self.departures.append(info.sid)
            return
        remote = self.participants.setdefault(info.sid, RemoteParticipant(info.sid, info.identity))
        if info.version <= remote.version:  # not newer: livekit-client ignores it too
            return
        remote.version = info.version
        remote.kind = info.kind
        remote.tracks = {track.sid: track for track in info.tracks}

    def _on_track(self, track: MediaStreamTrack) -> None:
        """On v1 the section's mid names the track, as for livekit-client, whose own
        receivers' track ids are not the SFU's."""
        sid = track.id  # aiortc's are the msid's, which the SFU sets to the track sid
        if self.protocol == "v1":
            mid = next(t.mid for t in self.sub_pc.getTransceivers() if t.receiver.track is track)
            sid = self._mid_to_track_id.get(str(mid), f"unnamed section {mid}")
        self._spawn(consume(track, self.received.setdefault(sid, Received())))


async def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    async def probe() -> bool:
        return predicate()

    await eventually(probe, timeout=timeout, interval=0.1)
