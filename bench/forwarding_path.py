#!/usr/bin/env python
"""Cost of the forwarding path alone: one published VP8 track fanned out to N subscriptions,
in one process, without peers or an event loop.

Each subscription has a real SRTP session (AEAD_AES_256_GCM, as aiortc negotiates) and sends
on one shared UDP socket (as with ``media.udp_port``) to a sink socket of its own on 127.0.0.1.
Inbound packets enter at :meth:`sfu.track.Layer.receive` (after the publisher's SRTP), so the
figures cover canonicalisation, history, fan-out, rewriting, protection and the send calls.

Printed per N: CPU µs per forwarded packet (user + system time of this process, so the
syscalls count; noisy on a shared machine) and, under callgrind, instructions per forwarded
packet (load-independent, user space only: the kernel's side of a syscall is not counted).

    .venv/bin/python -m bench.forwarding_path --subscribers 1 10 100 400
    .venv/bin/python -m bench.forwarding_path --callgrind --packets 600
"""

from __future__ import annotations

from types import SimpleNamespace
import argparse
import asyncio
import collections
import re
import socket
import statistics
import struct
import subprocess
import sys
import time

from aiortc import RTCPeerConnection
import pylibsrtp

from sfu import aiortc_seams as seams
from sfu.events import TrackInfo, TrackKind
from sfu.subscription import Subscription
from sfu.track import Layer, PublishedTrack

PUBLISHER_SSRC = 0x1234
PACKET_SIZE = 1100
"""Bytes of a video packet before SRTP (a 1 Mbit/s VP8 stream's are mostly this size)."""
PACKETS_PER_FRAME = 4
FRAMES_PER_KEYFRAME = 60
CHUNK = 20
"""Inbound packets between two drains of the sink sockets (outside the measurement)."""


def video_packets(count: int) -> list[bytes]:
    """VP8 packets with a PictureID: frames of a few packets, a key frame every 2 s."""
    packets = []
    for i in range(count):
        frame, part = divmod(i, PACKETS_PER_FRAME)
        start = part == 0
        key = start and frame % FRAMES_PER_KEYFRAME == 0
        marker = 0x80 if part == PACKETS_PER_FRAME - 1 else 0
        header = struct.pack("!BBHII", 0x80, marker | 96, i & 0xFFFF, frame * 3000, PUBLISHER_SSRC)
        descriptor = bytes(
            [0x90 if start else 0x80, 0x80, 0x80 | (frame >> 8) & 0x7F, frame & 0xFF]
        )
        tag = bytes([0x00 if key else 0x01, 0x9D, 0x01, 0x2A])
        body = descriptor + tag
        packets.append(header + body + bytes(PACKET_SIZE - 12 - len(body)))
    return packets


def srtp_transport(sender: socket.socket, sink: socket.socket) -> SimpleNamespace:
    """What :class:`sfu.aiortc_seams.RtpOutput` reads of a connected DTLS transport."""
    policy = pylibsrtp.Policy(
        key=bytes(range(44)),
        ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
        srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_256_GCM,
    )
    pair = SimpleNamespace(
        remote_addr=sink.getsockname(),
        protocol=SimpleNamespace(transport=SimpleNamespace(_sock=sender)),
    )
    return SimpleNamespace(
        _tx_srtp=pylibsrtp.Session(policy),
        transport=SimpleNamespace(_connection=SimpleNamespace(_nominated={1: pair})),
    )


def drain(sinks: list[socket.socket]) -> int:
    received = 0
    for sink in sinks:
        while True:
            try:
                sink.recv(2048)
            except BlockingIOError:
                break
            received += 1
    return received


def udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 22)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


async def fan_out(subscribers: int, packets: int) -> tuple[float, int, int]:
    """Forward ``packets`` inbound packets to ``subscribers``: (CPU seconds, packets sent,
    packets the sinks received)."""
    pc = RTCPeerConnection()
    track = PublishedTrack(
        TrackInfo("cam", "alice", TrackKind.VIDEO, "video/VP8", "1"),
        pc.addTransceiver("video").receiver,
        clock_rate=90000,
        rtx_payload_types={},
        audio_level_id=0,
        history_size=512,
        keyframe_interval=1e9,
        on_keyframe_request=lambda track_id, reason: None,
        on_audio_level=lambda participant, level, now: None,
    )
    sender = udp_socket()
    sinks = [udp_socket() for _ in range(subscribers)]
    subscriptions = []
    transports = [srtp_transport(sender, sink) for sink in sinks]
    # Kept referenced: an SRTP session is freed with its transport.
    for i, transport in enumerate(transports):
        subscription = Subscription(f"s{i}", f"s{i}#1", "video")
        subscription.ssrc = 0x10000 + i
        subscription._payload_types = {"video/vp8": 100}
        subscription.switch(track)
        subscription._output = seams.RtpOutput(transport, subscription.lane)  # type: ignore[arg-type]
        subscriptions.append(subscription)
    layer: Layer = track.layers[0]
    stream = video_packets(packets)
    ssrcs = [PUBLISHER_SSRC] * CHUNK
    received = 0
    cpu = 0.0
    try:
        for start in range(0, packets, CHUNK):
            chunk = stream[start : start + CHUNK]
            begin = time.process_time()
            # map_next: the C function callgrind's --toggle-collect counts inside.
            collections.deque(map(layer.receive, chunk, ssrcs), maxlen=0)
            cpu += time.process_time() - begin
            received += drain(sinks)
        sent = sum(subscription.packets_sent for subscription in subscriptions)
    finally:
        for subscription in subscriptions:
            subscription.close()
        track.close()
        await pc.close()
        for sock in [sender, *sinks]:
            sock.close()
    return cpu, sent, received


def instructions(subscribers: int, packets: int) -> tuple[int, int]:
    """Run one fan-out under callgrind, counting only inside the forwarding calls:
    (instructions, packets sent)."""
    command = [
        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
        "--collect-atstart=no", "--toggle-collect=map_next",
        sys.executable, "-m", "bench.forwarding_path",
        "--subscribers", str(subscribers), "--packets", str(packets), "--repeat", "1",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    collected = re.search(r"Collected : (\d+)", done.stderr)
    sent = re.search(r"sent (\d+),", done.stdout)
    if collected is None or sent is None:
        raise RuntimeError(f"unexpected callgrind output: {done.stderr[-500:]}")
    return int(collected.group(1)), int(sent.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, nargs="+", default=[1, 10, 100, 400])
    parser.add_argument("--packets", type=int, default=3000, help="inbound packets per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs per N (median shown)")
    parser.add_argument(
        "--callgrind", action="store_true", help="instructions per forwarded packet instead"
    )
    args = parser.parse_args()
    revision = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print(f"forwarding path, HEAD {revision or '?'}, {args.packets} inbound packets per run")
    for subscribers in args.subscribers:
        if args.callgrind:
            count, sent = instructions(subscribers, args.packets)
            print(f"N={subscribers:4d}: {count / sent:8.0f} instructions per forwarded packet")
            continue
        runs = []
        for _ in range(args.repeat):
            cpu, sent, received = asyncio.run(fan_out(subscribers, args.packets))
            runs.append(cpu * 1e6 / max(1, sent))
        print(
            f"N={subscribers:4d}: {statistics.median(runs):6.2f} µs CPU per forwarded packet "
            f"(runs {', '.join(f'{r:.2f}' for r in runs)}); sent {sent}, sinks received "
            f"{received}"
        )


if __name__ == "__main__":
    main()
