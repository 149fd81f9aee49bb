"""Simulcast side by side: our SFU and Janus's VideoRoom forwarding three VP8 layers.

    .venv/bin/python -m bench.simulcast            # ~6 min
    .venv/bin/python -m bench.simulcast --quick    # ~2 min

Publishers send a camera as three RID simulcast layers (180p, 360p, 720p sizes) the way a
browser does: one media section with ``a=rid``/``a=simulcast``, each layer its own SSRC tagged
with the RID header extension. aiortc cannot send that, so the packets are made here and sent
through the connection's SRTP: synthetic VP8 (valid payload descriptors and frame headers, key
frames with their size) whose last bytes mark the layer, at 30 frames a second and about 0.1,
0.5 and 1 Mbit/s; a key frame answers PLI or FIR for its layer. Subscribers (aiortc, not
decoding) are split across the layers, asking for them as each server's clients do (LiveKit
``update_track_settings`` quality; VideoRoom ``configure`` ``substream``).

Measured per server, each on one core (the load generator on the other), in the bench's
network namespace (as :mod:`bench.compare`): CPU µs per forwarded packet over a window, and
the layer-switch time, from a subscriber's request to the first packet of the new layer
reaching it (the server waits for that layer's key frame, so this includes its key frame
request), p50 and p95 over every subscriber's switches up and down.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Callable
from dataclasses import dataclass, field
import argparse
import asyncio
import json
import os
import random
import re
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.rtp import RTCP_PSFB_PLI, RtcpPacket, RtcpPsfbPacket
from livekit.protocol import models, rtc

from .common import PRIORITY, cpu_seconds, loopback_only, process_cpu_seconds
from .compare import LOAD_CPU, RUN_TIMEOUT_S, SERVER_CPU, setup_namespace
from .peers import RTCP_PSFB_FIR, rtc_configuration

RID_URI = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
RID_EXTENSION_ID = 10
FPS = 30
KEY_FRAME_INTERVAL_S = 10.0
SWITCH_TIMEOUT_S = 5.0
MARK = b"SL"
TRACK_ID = "camera"
QUALITIES = (models.VideoQuality.LOW, models.VideoQuality.MEDIUM, models.VideoQuality.HIGH)


@dataclass(frozen=True)
class LayerSpec:
    rid: str
    width: int
    height: int
    packets: int
    """Packets per frame."""
    size: int
    """Bytes of VP8 payload per packet."""


LAYERS = (
    LayerSpec("q", 320, 180, 1, 400),
    LayerSpec("h", 640, 360, 2, 1000),
    LayerSpec("f", 1280, 720, 4, 1100),
)


# ------------------------------------------------------------------------------ publisher


def simulcast_offer(sdp: str, track_id: str, highest_first: bool) -> str:
    """aiortc's offer for one send-only video section, made a browser's simulcast offer of
    track ``track_id``: the RID extension, three ``a=rid`` layers and ``a=simulcast``, no SSRC
    lines. The layers are listed lowest first as livekit-client does, or ``highest_first``
    as janus.js does (Janus takes the first for the highest)."""
    head, _, video = sdp.partition("m=video")
    lines = [line for line in video.split("\r\n") if not line.startswith(("a=ssrc", "a=msid"))]
    extra = [f"a=msid:bench {track_id}", f"a=extmap:{RID_EXTENSION_ID} {RID_URI}"]
    rids = [layer.rid for layer in (reversed(LAYERS) if highest_first else LAYERS)]
    extra += [f"a=rid:{rid} send" for rid in rids]
    extra.append("a=simulcast:send " + ";".join(rids))
    body = [line for line in lines if line]
    return head + "m=video" + "\r\n".join(body + extra) + "\r\n"


def _extension_id(sdp: str, uri: str) -> int:
    found = re.search(rf"^a=extmap:(\d+)\S* {re.escape(uri)}", sdp, re.MULTILINE)
    assert found, f"no {uri} in the answer"
    return int(found.group(1))


def _vp8_payload_type(sdp: str) -> int:
    found = re.search(r"^a=rtpmap:(\d+) VP8/90000", sdp, re.MULTILINE)
    assert found, "no VP8 in the answer"
    return int(found.group(1))


def _extensions(elements: list[tuple[int, bytes]]) -> bytes:
    body = b"".join(bytes([(ident << 4) | (len(value) - 1)]) + value for ident, value in elements)
    body += b"\0" * (-len(body) % 4)
    return struct.pack("!HH", 0xBEDE, len(body) // 4) + body


def vp8_packets(layer: int, picture_id: int, key: bool) -> list[bytes]:
    """One synthetic VP8 frame of ``layer`` as RTP payloads, each ending with the mark."""
    spec = LAYERS[layer]
    mark = MARK + bytes([layer])
    payloads = []
    for index in range(spec.packets):
        start = index == 0
        descriptor = bytes(
            [0x90 if start else 0x80, 0x80, 0x80 | (picture_id >> 8), picture_id & 0xFF]
        )
        header = b""
        if start:
            tag = (100 << 5) | 0x10 | (0 if key else 1)  # first partition size, show, key
            header = tag.to_bytes(3, "little")
            if key:
                header += b"\x9d\x01\x2a" + struct.pack("<HH", spec.width, spec.height)
        filler = bytes(spec.size - len(header) - len(mark))
        payloads.append(descriptor + header + filler + mark)
    return payloads


@dataclass
class _Stream:
    ssrc: int
    sequence: int = field(default_factory=lambda: random.randrange(1 << 16))
    picture_id: int = field(default_factory=lambda: random.randrange(1 << 15))
    key_wanted: bool = True


class SimulcastSender:
    """Sends the three layers on ``pc``'s one video transceiver, once it is connected."""

    def __init__(self, pc: RTCPeerConnection, highest_first: bool = False) -> None:
        self.pc = pc
        self.highest_first = highest_first
        self.transceiver = pc.addTransceiver("video", direction="sendonly")
        self.streams = [_Stream(random.randrange(1, 1 << 32)) for _ in LAYERS]
        self.packets = 0
        self.key_requests = [0 for _ in LAYERS]
        self._task: asyncio.Task[None] | None = None

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return simulcast_offer(self.pc.localDescription.sdp, TRACK_ID, self.highest_first)

    async def accept(self, answer: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))

    def start(self) -> None:
        self._task = asyncio.create_task(self._send())

    async def _send(self) -> None:
        while self.pc.connectionState != "connected":
            await asyncio.sleep(0.02)
        answer = self.pc.remoteDescription.sdp
        payload_type = _vp8_payload_type(answer)
        mid_id, mid = _extension_id(answer, MID_URI), str(self.transceiver.mid).encode()
        dtls: Any = self.transceiver.sender.transport
        self._answer_key_frame_requests(dtls)
        started = time.monotonic()
        next_key = started + KEY_FRAME_INTERVAL_S
        for frame in range(1 << 62):
            now = time.monotonic()
            if now >= next_key:
                next_key = now + KEY_FRAME_INTERVAL_S
                for stream in self.streams:
                    stream.key_wanted = True
            timestamp = frame * (90000 // FPS) & 0xFFFFFFFF
            for layer, stream in enumerate(self.streams):
                key, stream.key_wanted = stream.key_wanted, False
                stream.picture_id = (stream.picture_id + 1) & 0x7FFF
                payloads = vp8_packets(layer, stream.picture_id, key)
                ext = _extensions([(mid_id, mid), (RID_EXTENSION_ID, LAYERS[layer].rid.encode())])
                for index, payload in enumerate(payloads):
                    stream.sequence = (stream.sequence + 1) & 0xFFFF
                    marker = 0x80 if index == len(payloads) - 1 else 0
                    header = struct.pack(
                        "!BBHII", 0x90, marker | payload_type, stream.sequence, timestamp,
                        stream.ssrc,
                    )  # fmt: skip
                    await dtls._send_rtp(header + ext + payload)
                    self.packets += 1
            await asyncio.sleep(max(0.0, started + (frame + 1) / FPS - time.monotonic()))

    def _answer_key_frame_requests(self, dtls: Any) -> None:
        """PLI or FIR for a layer's SSRC: that layer's next frame is a key frame."""
        handle = dtls._handle_rtcp_data
        by_ssrc = {stream.ssrc: index for index, stream in enumerate(self.streams)}

        async def on_rtcp(data: bytes) -> None:
            try:
                packets = RtcpPacket.parse(data)
            except ValueError:
                packets = []
            for packet in packets:
                if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_PLI:
                    wanted = [packet.media_ssrc]
                elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_FIR:
                    fci = packet.fci
                    wanted = [struct.unpack_from("!I", fci, i)[0] for i in range(0, len(fci), 8)]
                else:
                    continue
                for ssrc in wanted:
                    if ssrc in by_ssrc:
                        self.streams[by_ssrc[ssrc]].key_wanted = True
                        self.key_requests[by_ssrc[ssrc]] += 1
            await handle(data)

        dtls._handle_rtcp_data = on_rtcp


# ------------------------------------------------------------------------------ subscribers


@dataclass
class Viewer:
    """One subscriber: counts marked packets and times its layer switches."""

    layer: int
    """The layer asked for last."""
    request: Callable[[int], Any] | None = None
    """Asks the server for a layer (a coroutine function)."""
    packets: int = 0
    arriving: int | None = None
    asked_at: float | None = None
    switches: list[float] = field(default_factory=list)
    timeouts: int = 0

    def watch(self, pc: RTCPeerConnection) -> None:
        """Count what arrives after SRTP; aiortc still sees every packet (for its receiver
        reports, which our SFU's bandwidth estimate needs) but decodes nothing."""
        dtls: Any = pc.getTransceivers()[0].receiver.transport
        handle = dtls._handle_rtp_data
        for transceiver in pc.getTransceivers():
            receiver: Any = transceiver.receiver
            if receiver._RTCRtpReceiver__decoder_thread is not None:
                receiver._RTCRtpReceiver__decoder_queue.put(None)
                receiver._RTCRtpReceiver__decoder_thread = None

        async def on_rtp(data: bytes, arrival_time_ms: int) -> None:
            if data[-3:-1] == MARK:
                self.packets += 1
                layer = data[-1]
                if layer != self.arriving:
                    self.arriving = layer
                    if layer == self.layer and self.asked_at is not None:
                        self.switches.append(time.monotonic() - self.asked_at)
                        self.asked_at = None
            await handle(data, arrival_time_ms)

        dtls._handle_rtp_data = on_rtp

    async def switch(self, layer: int) -> None:
        assert self.request is not None
        self.layer, self.asked_at = layer, time.monotonic()
        await self.request(layer)

    def settle(self) -> None:
        if self.asked_at is not None:
            self.timeouts += 1
            self.asked_at = None


# ------------------------------------------------------------------------------ drivers


class OursSimulcast:
    """Publishers and viewers as LiveKit v0 sessions of the bridge."""

    def __init__(self, url: str, secret: bytes) -> None:
        from .ours import OursDriver

        self._ids = OursDriver(url, secret)
        self._clients: list[Any] = []

    async def publish(self, meeting: int) -> SimulcastSender:
        client = self._ids._client(meeting)
        self._clients.append(client)
        await client.connect(auto_subscribe=False)
        sender = SimulcastSender(client.pub_pc)
        request = rtc.AddTrackRequest(
            cid=TRACK_ID, type=models.TrackType.VIDEO, source=models.TrackSource.CAMERA,
            name="camera", width=1280, height=720,
            layers=[
                models.VideoLayer(quality=q, width=s.width, height=s.height)
                for q, s in zip(QUALITIES, LAYERS, strict=True)
            ],
        )  # fmt: skip
        future = client._published[TRACK_ID] = asyncio.get_running_loop().create_future()
        await client.send(rtc.SignalRequest(add_track=request))
        await asyncio.wait_for(future, 10)
        answer = await client.offer_publisher(await sender.offer())
        await sender.accept(answer.sdp)
        sender.start()
        return sender

    async def view(self, meeting: int, layer: int) -> Viewer:
        client = self._ids._client(meeting)
        self._clients.append(client)
        viewer = Viewer(layer)
        await client.connect(auto_subscribe=True)
        for _ in range(500):
            tracks = [sid for p in client.participants.values() for sid in p.tracks]
            if tracks and client.sub_pc.connectionState == "connected":
                break
            await asyncio.sleep(0.02)
        [sid] = tracks

        async def request(index: int) -> None:
            settings = rtc.UpdateTrackSettings(track_sids=[sid], quality=QUALITIES[index])
            await client.send(rtc.SignalRequest(track_setting=settings))

        viewer.request = request
        viewer.watch(client.sub_pc)
        await viewer.switch(layer)
        return viewer


class JanusSimulcast:
    """Publishers and viewers of VideoRoom rooms (one per meeting)."""

    def __init__(self, url: str) -> None:
        from .janus import JanusDriver

        self._janus = JanusDriver(url)
        self._feeds: dict[int, int] = {}

    async def open(self) -> None:
        await self._janus.open()

    async def publish(self, meeting: int) -> SimulcastSender:
        janus = self._janus
        room = janus._room(meeting)
        await janus._message(
            janus._control,
            {"request": "create", "room": room, "publishers": 10, "videocodec": "vp8",
             "fir_freq": 0},
        )  # fmt: skip
        handle = await janus._attach()
        sender = SimulcastSender(RTCPeerConnection(rtc_configuration()), highest_first=True)
        data, jsep = await janus._message(
            handle,
            {"request": "joinandconfigure", "room": room, "ptype": "publisher"},
            {"type": "offer", "sdp": await sender.offer(), "trickle": False},
        )
        assert jsep is not None, data
        await sender.accept(jsep["sdp"])
        sender.start()
        while sender.pc.connectionState != "connected":
            await asyncio.sleep(0.02)
        self._feeds[meeting] = int(data["id"])
        return sender

    async def view(self, meeting: int, layer: int) -> Viewer:
        janus = self._janus
        pc = RTCPeerConnection(rtc_configuration())
        handle, data = await janus.subscribe(meeting, [self._feeds[meeting]], pc)
        [mid] = [s["mid"] for s in data["streams"] if s.get("type") == "video"]
        viewer = Viewer(layer)

        async def request(index: int) -> None:
            body = {"request": "configure", "streams": [{"mid": mid, "substream": index}]}
            await janus._message(handle, body)

        viewer.request = request
        while pc.connectionState != "connected":
            await asyncio.sleep(0.02)
        viewer.watch(pc)
        await viewer.switch(layer)
        return viewer


# ------------------------------------------------------------------------------ load generator


def _percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 1)


async def loadgen(args: argparse.Namespace) -> dict[str, Any]:
    loopback_only()
    driver: Any
    if args.server == "ours":
        driver = OursSimulcast(args.url, os.environ["BENCH_FOCUS_KEY"].encode())
    else:
        driver = JanusSimulcast(args.url)
        await driver.open()
    senders = [await driver.publish(meeting) for meeting in range(args.publishers)]
    viewers = [
        await driver.view(i % args.publishers, i % len(LAYERS)) for i in range(args.viewers)
    ]
    await asyncio.sleep(args.warmup)  # every viewer on its first layer, estimates grown
    for viewer in viewers:
        viewer.settle()
        viewer.switches.clear()
    own_cpu = cpu_seconds()
    cpu, delivered = process_cpu_seconds(args.pid), sum(v.packets for v in viewers)
    sent = sum(s.packets for s in senders)
    await asyncio.sleep(args.measure)
    cpu = process_cpu_seconds(args.pid) - cpu
    own_cpu = cpu_seconds() - own_cpu
    delivered = sum(v.packets for v in viewers) - delivered
    sent = sum(s.packets for s in senders) - sent
    for _ in range(args.switches):
        for viewer in viewers:  # up one layer, or from the top down to the lowest
            await viewer.switch((viewer.layer + 1) % len(LAYERS))
            await asyncio.sleep(random.uniform(0.0, 1.0 / len(viewers)))
        await asyncio.sleep(SWITCH_TIMEOUT_S)
        for viewer in viewers:
            viewer.settle()
    switches = [s * 1000 for v in viewers for s in v.switches]
    return {
        "server": args.server,
        "publishers": args.publishers,
        "viewers": args.viewers,
        "server_cpu_pct": round(100 * cpu / args.measure, 1),
        "load_generator_cpu_pct": round(100 * own_cpu / args.measure, 1),
        "sent_pps": round(sent / args.measure),
        "delivered_pps": round(delivered / args.measure),
        "us_per_packet": round(1e6 * cpu / delivered, 1) if delivered else None,
        "switches": len(switches),
        "switch_timeouts": sum(v.timeouts for v in viewers),
        "switch_p50_ms": _percentile(switches, 0.5),
        "switch_p95_ms": _percentile(switches, 0.95),
        "switch_mean_ms": round(statistics.fmean(switches), 1) if switches else None,
        "key_requests_by_layer": [sum(s.key_requests[i] for s in senders) for i in range(3)],
    }


# ------------------------------------------------------------------------------ orchestration


def run(server: Any, args: argparse.Namespace, secret: bytes) -> dict[str, Any]:
    server.start()
    try:
        command = [
            "nice", "-n", str(PRIORITY), "taskset", "-c", str(LOAD_CPU), sys.executable, "-m",
            "bench.simulcast",
            "--role", "loadgen", "--server", server.name, "--url", server.url,
            "--pid", str(server.pid), "--publishers", str(args.publishers),
            "--viewers", str(args.viewers), "--warmup", str(args.warmup),
            "--measure", str(args.measure), "--switches", str(args.switches),
        ]  # fmt: skip
        env = {**os.environ, "BENCH_FOCUS_KEY": secret.decode()}
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=env
            )
        except subprocess.TimeoutExpired:
            return {"server": server.name, "error": "timeout"}
        for line in done.stdout.splitlines():
            if line.startswith("RESULT "):
                result: dict[str, Any] = json.loads(line[7:])
                return result
        return {"server": server.name, "error": (done.stdout + done.stderr)[-3000:]}
    finally:
        server.stop()


def table(results: list[dict[str, Any]]) -> list[str]:
    by = {r["server"]: r for r in results if "error" not in r}
    rows = ["| figure | ours | Janus | ours/Janus |", "|---|---|---|---|"]
    for key, label in (
        ("us_per_packet", "CPU µs per forwarded packet"),
        ("server_cpu_pct", "server CPU % of one core"),
        ("delivered_pps", "packets forwarded per second"),
        ("load_generator_cpu_pct", "load generator CPU % of one core"),
        ("switch_p50_ms", "layer switch p50 ms (request to first packet of the layer)"),
        ("switch_p95_ms", "layer switch p95 ms"),
        ("switch_timeouts", f"switches not done within {SWITCH_TIMEOUT_S:.0f} s"),
    ):
        ours, janus = by.get("ours", {}).get(key), by.get("janus", {}).get(key)
        ratio = f"{ours / janus:.2f}x" if ours and janus else "-"
        rows.append(f"| {label} | {ours if ours is not None else '-'} | "
                    f"{janus if janus is not None else '-'} | {ratio} |")  # fmt: skip
    return rows


def bench(args: argparse.Namespace) -> None:
    from .janus import JanusServer, version
    from .ours import BridgeServer

    setup_namespace()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated"))
    workdir = tempfile.mkdtemp(prefix="sfu-bench-simulcast-")
    started = time.monotonic()
    ours = BridgeServer(workdir, SERVER_CPU, LOAD_CPU)
    results = []
    try:
        ours.start()  # creates the focus key
        secret = ours.secret()
        ours.stop()
        for server in (ours, JanusServer(workdir, SERVER_CPU, 1)):
            if args.servers and server.name not in args.servers.split(","):
                continue
            result = run(server, args, secret)
            print(json.dumps(result), flush=True)
            results.append(result)
    finally:
        ours.close()
    print(
        f"\n{args.publishers} publishers x 3 layers, {args.viewers} viewers; Janus {version()}; "
        f"{time.monotonic() - started:.0f} s"
    )
    print("\n".join(table(results)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer viewers and switches")
    parser.add_argument("--servers", default="", help="ours,janus")
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument("--viewers", type=int, default=30)
    parser.add_argument("--warmup", type=float, default=8.0)
    parser.add_argument("--measure", type=float, default=15.0)
    parser.add_argument("--switches", type=int, default=6, help="rounds of one switch each")
    parser.add_argument("--role", default="bench", choices=["bench", "inside", "loadgen"])
    parser.add_argument("--server", default="")
    parser.add_argument("--url", default="")
    parser.add_argument("--pid", type=int, default=0)
    args = parser.parse_args()
    if args.quick and args.role != "loadgen":
        args.viewers, args.measure, args.switches = 12, 8.0, 3
    if args.role == "loadgen":
        print("RESULT " + json.dumps(asyncio.run(loadgen(args))), flush=True)
        os._exit(0)  # aiortc's connections are not closed one by one
    elif args.role == "inside":
        bench(args)
    else:
        from .janus import ensure_installed

        ensure_installed()
        inner = ["unshare", "-n", sys.executable, "-m", "bench.simulcast", *sys.argv[1:]]
        sys.exit(subprocess.run([*inner, "--role", "inside"]).returncode)


if __name__ == "__main__":
    main()
