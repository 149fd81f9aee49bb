"""Janus 1.1 (Debian's ``janus``) as the peer SFU: configured, started and driven through its
VideoRoom plugin over the HTTP API, with aiortc peers.

Janus never gathers ICE candidates on loopback interfaces, so it runs inside the bench's own
network namespace, where a veth end ``jb0`` carries a second ``127.0.0.1`` (see
``docs/benchmarks.md``). Only the VideoRoom plugin and the HTTP transport are loaded, on
127.0.0.1; no STUN or TURN server is configured.
"""

from __future__ import annotations

from typing import Any
import asyncio
import os
import secrets
import shutil
import subprocess
import time
import urllib.request

from aiortc import RTCPeerConnection, RTCSessionDescription
import aiohttp

from .common import pin
from .peers import Peer, Publisher, rtc_configuration

PLUGINS = "/usr/lib/x86_64-linux-gnu/janus/plugins"
TRANSPORTS = "/usr/lib/x86_64-linux-gnu/janus/transports"
PORT = 8088


def ensure_installed() -> None:
    """``apt-get install janus`` if it is missing (needs root)."""
    if shutil.which("janus"):
        return
    print("installing Janus (apt-get install janus) ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(["apt-get", "install", "-y", "janus"], env=env, check=False).returncode:
        subprocess.run(["apt-get", "update"], env=env, check=True)
        subprocess.run(["apt-get", "install", "-y", "janus"], env=env, check=True)


def version() -> str:
    out = subprocess.run(["janus", "--version"], capture_output=True, text=True).stdout
    return next((line.split("(")[-1].rstrip(")") for line in out.splitlines() if "(" in line), "?")


def _disable_all_but(folder: str, keep: str) -> str:
    return ",".join(sorted(f for f in os.listdir(folder) if f.endswith(".so") and f != keep))


def write_config(folder: str, event_loops: int) -> None:
    loops = f"\tevent_loops = {event_loops}\n" if event_loops else ""
    plugins = _disable_all_but(PLUGINS, "libjanus_videoroom.so")
    transports = _disable_all_but(TRANSPORTS, "libjanus_http.so")
    with open(os.path.join(folder, "janus.jcfg"), "w") as f:
        f.write(
            "general: {\n"
            f'\tconfigs_folder = "{folder}"\n'
            f'\tplugins_folder = "{PLUGINS}"\n'
            f'\ttransports_folder = "{TRANSPORTS}"\n'
            "\tdebug_level = 4\n"
            f"{loops}"
            "}\n"
            "media: {\n}\n"
            "nat: {\n"
            "\tice_lite = true\n"
            '\tice_enforce_list = "127.0.0.1"\n'
            "\tignore_mdns = true\n"
            "}\n"
            f'plugins: {{\n\tdisable = "{plugins}"\n}}\n'
            f'transports: {{\n\tdisable = "{transports}"\n}}\n'
            "events: {\n\tbroadcast = false\n}\n"
        )
    with open(os.path.join(folder, "janus.transport.http.jcfg"), "w") as f:
        f.write(
            'general: {\n\tbase_path = "/janus"\n\thttp = true\n'
            f'\tport = {PORT}\n\tip = "127.0.0.1"\n\thttps = false\n}}\n'
            "admin: {\n\tadmin_http = false\n}\n"
        )
    with open(os.path.join(folder, "janus.plugin.videoroom.jcfg"), "w") as f:
        f.write("general: {\n}\n")


class JanusServer:
    """One Janus process, pinned to a core, with its config in a scratch folder."""

    name = "janus"

    def __init__(self, workdir: str, cpu: int, event_loops: int) -> None:
        self.workdir = workdir
        self.cpu = cpu
        self.event_loops = event_loops
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{PORT}/janus"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        folder = os.path.join(self.workdir, "janus")
        os.makedirs(folder, exist_ok=True)
        write_config(folder, self.event_loops)
        log = open(os.path.join(folder, "janus.log"), "ab")  # noqa: SIM115 - lives with it
        self.process = subprocess.Popen(
            ["janus", "-F", folder, "-C", f"{folder}/janus.jcfg"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        pin(self.process.pid, self.cpu)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/info", timeout=1):
                    return
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.1)
        raise RuntimeError(f"Janus did not start; see {folder}/janus.log")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


# ------------------------------------------------------------------------------ driving


class JanusError(RuntimeError):
    pass


class JanusDriver:
    """Publishers and subscribers of VideoRoom rooms (one room per meeting), in one session.

    A publisher is a handle that ``joinandconfigure``s with its offer; a receiving participant
    is one subscriber handle with every other feed of its room as streams of one peer
    connection (Janus 1.x multistream), like the LiveKit subscriber connection.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._http: aiohttp.ClientSession | None = None
        self._session = 0
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._poller: asyncio.Task[None] | None = None
        self._control = 0
        self._rooms: dict[int, list[int]] = {}
        """Feed ids of each meeting's publishers."""

    async def open(self) -> None:
        self._http = aiohttp.ClientSession()
        self._session = (await self._post(self.url, {"janus": "create"}))["data"]["id"]
        self._poller = asyncio.create_task(self._poll())
        self._control = await self._attach()

    async def join_publisher(self, meeting: int, publisher: Publisher) -> Peer:
        if meeting not in self._rooms:
            self._rooms[meeting] = []
            await self._message(
                self._control,
                {
                    "request": "create",
                    "room": self._room(meeting),
                    "publishers": 100,
                    "bitrate": 1_500_000,
                    "bitrate_cap": True,
                    "videocodec": "vp8",
                    "audiocodec": "opus",
                    "fir_freq": 0,
                },
            )
        handle = await self._attach()
        pc = RTCPeerConnection(rtc_configuration())
        for track in publisher.tracks:
            pc.addTransceiver(track, direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        data, jsep = await self._message(
            handle,
            {"request": "joinandconfigure", "room": self._room(meeting), "ptype": "publisher"},
            {"type": "offer", "sdp": pc.localDescription.sdp, "trickle": False},
        )
        assert jsep is not None, data
        await pc.setRemoteDescription(RTCSessionDescription(jsep["sdp"], "answer"))
        while pc.connectionState != "connected":  # Janus offers no feed before that
            await asyncio.sleep(0.02)
        self._rooms[meeting].append(int(data["id"]))
        return Peer(meeting, pub_pc=pc, publisher=publisher, handle=data["id"])

    async def join_receiver(self, peer: Peer) -> Peer:
        """Subscribe ``peer`` to every other feed of its meeting."""
        meeting = peer.meeting
        feeds = [feed for feed in self._rooms[meeting] if feed != peer.handle]
        if not feeds:
            return peer
        await self.subscribe(meeting, feeds, peer.new_sub_pc(2 * len(feeds)))
        return peer

    async def subscribe(
        self, meeting: int, feeds: list[int], pc: RTCPeerConnection
    ) -> tuple[int, dict[str, Any]]:
        """A subscriber handle receiving ``feeds`` on ``pc``: its id, and the join's answer
        (with the subscriber's ``streams``)."""
        handle = await self._attach()
        data, jsep = await self._message(
            handle,
            {
                "request": "join",
                "room": self._room(meeting),
                "ptype": "subscriber",
                "streams": [{"feed": feed} for feed in feeds],
            },
        )
        assert jsep is not None, data
        await pc.setRemoteDescription(RTCSessionDescription(jsep["sdp"], "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await self._message(
            handle,
            {"request": "start"},
            {"type": "answer", "sdp": pc.localDescription.sdp, "trickle": False},
        )
        return handle, data

    @staticmethod
    def _room(meeting: int) -> int:
        return 1000 + meeting

    async def _attach(self) -> int:
        body = {"janus": "attach", "plugin": "janus.plugin.videoroom"}
        return int((await self._post(f"{self.url}/{self._session}", body))["data"]["id"])

    async def _message(
        self, handle: int, body: dict[str, Any], jsep: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        transaction = secrets.token_hex(8)
        future = asyncio.get_running_loop().create_future()
        self._pending[transaction] = future
        request: dict[str, Any] = {"janus": "message", "body": body, "transaction": transaction}
        if jsep is not None:
            request["jsep"] = jsep
        reply = await self._post(f"{self.url}/{self._session}/{handle}", request)
        event = reply if reply["janus"] == "success" else await asyncio.wait_for(future, 30)
        self._pending.pop(transaction, None)
        data: dict[str, Any] = event["plugindata"]["data"]
        if "error" in data:
            raise JanusError(data["error"])
        return data, event.get("jsep")

    async def _post(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        assert self._http is not None
        body.setdefault("transaction", secrets.token_hex(8))
        async with self._http.post(url, json=body) as response:
            reply: dict[str, Any] = await response.json(content_type=None)
        if reply["janus"] == "error":
            raise JanusError(reply["error"]["reason"])
        return reply

    async def _poll(self) -> None:
        """The session's long poll: asynchronous plugin events, and the session keep-alive."""
        assert self._http is not None
        url = f"{self.url}/{self._session}?maxev=50"
        while True:
            async with self._http.get(url, timeout=aiohttp.ClientTimeout(total=60)) as response:
                events = await response.json(content_type=None)
            for event in events if isinstance(events, list) else [events]:
                future = self._pending.get(event.get("transaction", ""))
                if event.get("janus") == "event" and future is not None and not future.done():
                    future.set_result(event)
