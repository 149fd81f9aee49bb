"""Our SFU as the product runs it: the bridge process, configured and registered through its
CLI (``demo.bridge_process``), next to a real Synapse, driven through its LiveKit signalling.

Clients connect to ``/rtc`` with focus tokens minted with the bridge's own key (read from its
database) instead of going through ``/sfu/get`` with Matrix OpenID: the token service is not
what is measured, and rooms then need no Matrix set-up. The bridge admits callers in rooms
without its bot by its permissions (``focus.rooms_without_bot: bridge_permissions``), so
every token's room is joinable; the access check itself still runs on every connect.
"""

from __future__ import annotations

from pathlib import Path
import asyncio

from livekit.protocol import models, rtc

from demo.bridge_process import BridgeProcess, edit_config
from demo.livekit_client import LiveKitClient
from demo.minted_tokens import MintedTokens, bridge_secret
from demo.synapse import SERVER_NAME, Synapse

from .common import pin
from .peers import Peer, Publisher


class BridgeServer:
    """Synapse (started once, on the load generator's core) and the bridge (restarted for each
    run, pinned to the server core)."""

    name = "ours"

    def __init__(self, workdir: str, cpu: int | str, load_cpu: int, workers: int = 1) -> None:
        """``cpu``: the core (or cores, ``0-1``) the bridge and its ``workers`` run on."""
        self.workdir = Path(workdir)
        self.cpu = cpu
        self.synapse = Synapse(self.workdir / "synapse")
        self.bridge = BridgeProcess(self.workdir / "bridge", self.synapse.base_url, SERVER_NAME)
        self.bridge.configure({SERVER_NAME: "user"})
        edit_config(
            self.bridge.config_path,
            {
                "focus.rooms_without_bot": "bridge_permissions",
                "media.workers": workers,
                # Every load-generator client connects from 127.0.0.1, to one room's call.
                "focus.limits.max_connections": 10000,
                "focus.limits.max_connections_per_ip": 10000,
                "media.limits.participants_per_room": 1000,
                "media.limits.connecting": 1000,
            },
        )
        self.bridge.use_database(f"sqlite:{self.workdir / 'bridge.db'}")
        self.synapse.start(appservice_files=[self.bridge.registration_path])
        pin(self.synapse.pid, load_cpu)

    @property
    def url(self) -> str:
        return self.bridge.focus_url

    @property
    def pid(self) -> int:
        return self.bridge.pid

    def secret(self) -> bytes:
        return bridge_secret(self.bridge)

    def start(self) -> None:
        self.bridge.start()
        pin(self.pid, self.cpu)

    def stop(self) -> None:
        self.bridge.kill()

    def close(self) -> None:
        self.stop()
        self.synapse.stop()


class BenchClient(LiveKitClient):
    """The tests' LiveKit v0 client, publishing given tracks instead of encoding its own."""

    async def publish_tracks(self, publisher: Publisher) -> None:
        for track in publisher.tracks:
            video = track.kind == "video"
            request = rtc.AddTrackRequest(
                cid=track.id,
                type=models.TrackType.VIDEO if video else models.TrackType.AUDIO,
                source=models.TrackSource.CAMERA if video else models.TrackSource.MICROPHONE,
                name="camera" if video else "microphone",
                width=640 if video else 0,
                height=360 if video else 0,
            )
            future = self._published[track.id] = asyncio.get_running_loop().create_future()
            await self.send(rtc.SignalRequest(add_track=request))
            await asyncio.wait_for(future, 10)
            self.pub_pc.addTransceiver(track, direction="sendonly")
        await self.negotiate_publisher()


class OursDriver:
    """Each participant is one LiveKit session (publisher and subscriber connections)."""

    def __init__(self, url: str, secret: bytes) -> None:
        self.url = url
        self._tokens = MintedTokens(secret)
        self._publishers: dict[int, int] = {}
        self._clients = 0

    async def open(self) -> None:
        return None

    async def join_publisher(self, meeting: int, publisher: Publisher) -> Peer:
        client = self._client(meeting)
        peer = Peer(meeting, pub_pc=client.pub_pc, publisher=publisher, handle=client)
        peer.adopt_sub_pc(client.sub_pc, 0)
        await client.connect(auto_subscribe=True)
        await client.publish_tracks(publisher)
        self._publishers[meeting] = self._publishers.get(meeting, 0) + 1
        return peer

    async def join_receiver(self, peer: Peer) -> Peer:
        """The subscriber connection receives every other publisher (auto-subscribe)."""
        publishers = self._publishers.get(peer.meeting, 0)
        if peer.handle is None:
            peer.handle = self._client(peer.meeting)
            peer.adopt_sub_pc(peer.handle.sub_pc, 2 * publishers)
            await peer.handle.connect(auto_subscribe=True)
        else:
            peer.expected_streams = 2 * (publishers - 1)
        return peer

    def _client(self, meeting: int) -> BenchClient:
        self._clients += 1
        room_id = f"!bench{meeting}:{SERVER_NAME}"
        user_id = f"@bench{self._clients}:{SERVER_NAME}"
        return BenchClient(self.url, self._tokens.issue(user_id, room_id))
