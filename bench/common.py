"""What every bench shares: synthetic pre-encoded media, cheap kernel sinks, CPU and memory
readings of a process.

The publisher media is VP8 640x360@30 (~1 Mbit/s, a key frame every 2 s) and Opus 20 ms,
encoded once and cached, then sent through aiortc's no-encode ``av.Packet`` path so that
publishers cost the load generator little.
"""

from __future__ import annotations

from typing import Any
import asyncio
import ctypes
import fractions
import math
import os
import pickle
import resource
import socket
import struct
import subprocess
import tempfile
import time

WIDTH, HEIGHT, FPS, GOP, SECONDS = 640, 360, 30, 60, 10
MEDIA_CACHE = os.path.join(tempfile.gettempdir(), "sfu_fanout_media_v1.pkl")
_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def loopback_only() -> None:
    """Client peers gather on 127.0.0.1 only (aioice skips loopback addresses by default)."""
    import aioice.ice

    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def family(pid: int) -> list[int]:
    """A process and all its descendants (the bridge and its media workers)."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as f:
                    pending += [int(child) for child in f.read().split()]
        except FileNotFoundError:  # it ended meanwhile
            continue
    return found


def process_cpu_seconds(pid: int) -> float:
    """user + system time of a whole process (all threads) and its descendants, from /proc."""
    total = 0
    for member in family(pid):
        try:
            with open(f"/proc/{member}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / _CLOCK_TICKS


PRIORITY = -10
"""Niceness of servers and load generator: the machine is shared, other work must not starve
either side of a measurement (both servers get the same)."""


def pin(pid: int, cpu: int | str) -> None:
    """Every thread of a process and its descendants (and those they start later) on ``cpu``
    (a core, or a list such as ``0,1``), at :data:`PRIORITY`."""
    for member in family(pid):
        subprocess.run(["taskset", "-a", "-p", "-c", str(cpu), str(member)], check=True, stdout=-3)
        for task in os.listdir(f"/proc/{member}/task"):
            os.setpriority(os.PRIO_PROCESS, int(task), PRIORITY)


def thread_waits(pid: int) -> dict[str, float]:
    """Seconds each thread of a process and its descendants spent runnable but waiting for a
    CPU (others had it)."""
    waits = {}
    for member in family(pid):
        try:
            tasks = os.listdir(f"/proc/{member}/task")
        except FileNotFoundError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{member}/task/{task}/schedstat") as f:
                    waits[f"{member}/{task}"] = int(f.read().split()[1]) / 1e9
            except FileNotFoundError:  # the thread ended
                continue
    return waits


def process_rss(pid: int) -> int:
    """Resident memory of a process and its descendants."""
    total = 0
    for member in family(pid):
        try:
            with open(f"/proc/{member}/statm") as f:
                total += int(f.read().split()[1]) * _PAGE
        except FileNotFoundError:
            continue
    return total


# ------------------------------------------------------------------------------ media


def prepare_media() -> dict[str, list[bytes]]:
    """Encode 10 s of moving synthetic video and a tone once; cached in the temp dir."""
    if os.path.exists(MEDIA_CACHE):
        with open(MEDIA_CACHE, "rb") as f:
            media: dict[str, list[bytes]] = pickle.load(f)
            return media
    import av
    import numpy as np

    rng = np.random.default_rng(1)
    texture = np.kron(
        rng.integers(0, 256, (HEIGHT // 4, WIDTH // 4), dtype=np.uint8),
        np.ones((8, 8), dtype=np.uint8),
    )
    video = av.CodecContext.create("libvpx", "w")
    video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    video.bit_rate = 1_000_000
    video.time_base = fractions.Fraction(1, FPS)
    video.gop_size = GOP
    video.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    frames = []
    for i in range(FPS * SECONDS):
        y = np.roll(texture, (i * 2, i * 3), axis=(0, 1))[:HEIGHT, :WIDTH].copy()
        band = (i * 7) % (HEIGHT - 12)
        y[band : band + 12] = rng.integers(0, 256, (12, WIDTH), dtype=np.uint8)
        image = np.vstack([y, np.full((HEIGHT // 2, WIDTH), 128, dtype=np.uint8)])
        frame = av.VideoFrame.from_ndarray(image, format="yuv420p")
        frame.pts = i
        if i % GOP == 0:
            frame.pict_type = av.video.frame.PictureType.I
        frames += [bytes(p) for p in video.encode(frame)]
    frames += [bytes(p) for p in video.encode(None)]

    audio = av.CodecContext.create("libopus", "w")
    audio.bit_rate, audio.sample_rate, audio.format, audio.layout = 32000, 48000, "s16", "mono"
    audio.time_base = fractions.Fraction(1, 48000)
    packets = []
    for i in range(50 * SECONDS):
        t = (np.arange(960) + i * 960) / 48000
        tone = (np.sin(2 * math.pi * 440 * t) * 8000).astype(np.int16).reshape(1, -1)
        chunk = av.AudioFrame.from_ndarray(tone, format="s16", layout="mono")
        chunk.sample_rate, chunk.pts = 48000, i * 960
        packets += [bytes(p) for p in audio.encode(chunk)]
    media = {"video": frames[: FPS * SECONDS], "audio": packets}
    with open(MEDIA_CACHE, "wb") as f:
        pickle.dump(media, f)
    return media


def pre_encoded_track(kind: str, frames: list[bytes], gate: asyncio.Event | None = None) -> Any:
    """A track that yields pre-encoded av.Packets in real time: aiortc packetizes, no encode.

    Nothing is sent before ``gate`` is set. ``request_keyframe()`` makes the next video frame
    the next key frame of the loop (frames in between are skipped, timestamps run on), the
    way an encoder answers a PLI.
    """
    from aiortc.mediastreams import MediaStreamTrack
    import av

    keyframes = [i for i, frame in enumerate(frames) if kind == "video" and not frame[0] & 1]

    class PreEncoded(MediaStreamTrack):
        def __init__(self) -> None:
            super().__init__()
            self.kind = kind
            self._index = 0
            self._position = 0
            self._start = 0.0
            self._keyframe_wanted = False
            video = kind == "video"
            self._period = 1 / FPS if video else 0.02
            self._step = 90000 // FPS if video else 960
            self._time_base = fractions.Fraction(1, 90000 if video else 48000)

        def request_keyframe(self) -> None:
            self._keyframe_wanted = bool(keyframes)

        async def recv(self) -> av.Packet:
            if not self._start:
                if gate is not None:
                    await gate.wait()
                self._start = time.monotonic()
            delay = self._start + self._index * self._period - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if self._keyframe_wanted:
                self._keyframe_wanted = False
                later = [i for i in keyframes if i > self._position]
                self._position = later[0] if later else keyframes[0]
            packet = av.Packet(frames[self._position])
            packet.pts, packet.time_base = self._index * self._step, self._time_base
            self._index += 1
            self._position = (self._position + 1) % len(frames)
            return packet

    return PreEncoded()


# ------------------------------------------------------------------------------ sinks


def _bpf(program: list[tuple[int, int, int, int]]) -> tuple[bytes, Any]:
    buf = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in program))
    return struct.pack("HL", len(program), ctypes.addressof(buf)), buf


def drop_rtp_in_kernel(sock: socket.socket, keep_rtcp: bool = False) -> Any:
    """Classic BPF on a peer's ICE socket: drop SRTP in the kernel, keep STUN and DTLS (and
    SRTCP with ``keep_rtcp``, so receiver reports and consent keep flowing).

    Dropped datagrams are counted in the ``drops`` column of /proc/net/udp. Returns the filter
    buffer, which must stay alive.
    """
    if keep_rtcp:  # RTP: first byte 0x80..0xBF, second byte outside 192..223 (RFC 5761)
        program = [
            (0x30, 0, 0, 8),  # 0: A = first payload byte
            (0x35, 0, 6, 0x80),  # 1: A < 0x80 (STUN, DTLS): accept
            (0x35, 5, 0, 0xC0),  # 2: A >= 0xC0: accept
            (0x30, 0, 0, 9),  # 3: A = second byte
            (0x35, 0, 2, 192),  # 4: A < 192: RTP, drop
            (0x35, 1, 0, 224),  # 5: A >= 224: RTP, drop
            (0x06, 0, 0, 0xFFFF),  # 6: RTCP: accept
            (0x06, 0, 0, 0),  # 7: drop
            (0x06, 0, 0, 0xFFFF),  # 8: accept
        ]
    else:
        program = [(0x30, 0, 0, 8), (0x35, 0, 1, 0x80), (0x06, 0, 0, 0), (0x06, 0, 0, 0xFFFF)]
    prog, buf = _bpf(program)
    sock.setsockopt(socket.SOL_SOCKET, 26, prog)  # SO_ATTACH_FILTER
    return buf


def socket_inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def kernel_drops(inodes: set[int]) -> int:
    return sum(drops_by_socket(inodes).values())


def drops_by_socket(inodes: set[int]) -> dict[int, int]:
    """The ``drops`` counter of each of these UDP sockets (by inode)."""
    found = {}
    with open("/proc/net/udp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if int(fields[9]) in inodes:
                found[int(fields[9])] = int(fields[-1])
    return found
