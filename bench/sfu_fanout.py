#!/usr/bin/env python
"""Fan-out benchmark of the SFU: one publisher, N subscribers, the SFU on one core.

Three processes on 127.0.0.1: the SFU (``sfu.SFU``, pinned to one core), the clients (pinned
to the other core: an aiortc publisher sending pre-encoded VP8 640x360@30 + Opus through
aiortc's no-encode ``av.Packet`` path, one *verifier* subscriber that decodes everything, and
N-1 *sink* subscribers whose RTP is dropped in the kernel by a BPF socket filter after DTLS is
up, so they cost the client core nothing), and this orchestrator.

For each N the publisher's tracks stay muted (nothing forwarded) until every subscriber is
connected, then a warm-up and a measurement window follow. Printed per N: SFU CPU, forwarded
packets/s, CPU µs per forwarded packet, delivery ratio (packets the sinks' kernels received /
publisher packets x sinks) and the verifier's decoded frame rates. "No frame loss" means
delivery >= 0.99 and the verifier decoding >= 29 video and >= 48 audio frames/s.

    .venv/bin/python bench/sfu_fanout.py --quick      # ~30 s
    .venv/bin/python bench/sfu_fanout.py              # sweep, stops at the first loss, < 3 min
"""

from __future__ import annotations

from typing import Any
import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from bench.common import (  # noqa: E402 - after the path set-up
    cpu_seconds,
    drop_rtp_in_kernel,
    kernel_drops,
    loopback_only,
    pre_encoded_track,
    prepare_media,
    socket_inode,
)

# ------------------------------------------------------------------------------ signalling


async def rpc(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, message: dict[str, Any]
) -> dict[str, Any]:
    writer.write(json.dumps(message).encode() + b"\n")
    await writer.drain()
    reply: dict[str, Any] = json.loads(await reader.readline())
    return reply


# ------------------------------------------------------------------------------ SFU process


async def sfu_main(port: int, port_per_connection: bool) -> None:
    from sfu import SFU, MediaSettings, TransportRole

    udp_port = None if port_per_connection else 0
    server = SFU(MediaSettings(bind_addresses=("127.0.0.1",), udp_port=udp_port))
    await server.start()
    conference = server.create_conference("bench")
    publisher = conference.join("publisher", auto_subscribe=False)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            message = json.loads(line)
            reply: dict[str, Any] = {}
            if message["type"] == "publish":
                transport = publisher.add_transport(TransportRole.PUBLISHER)
                reply["sdp"] = await transport.accept_offer(
                    message["sdp"], {"0": "audio", "1": "video"}
                )
                for track_id in ("audio", "video"):  # gate: nothing forwarded until "go"
                    publisher.set_muted(track_id, True)
            elif message["type"] == "subscribe":
                subscriber = conference.join(message["id"], auto_subscribe=False)
                transport = subscriber.add_transport(TransportRole.SUBSCRIBER)
                subscriber.subscribe("audio")
                subscriber.subscribe("video")
                reply["sdp"] = await transport.create_offer()
            elif message["type"] == "answer":
                participant = conference.participant(message["id"])
                assert participant is not None
                await participant.transports[0].accept_answer(message["sdp"])
            elif message["type"] == "go":
                for track_id in ("audio", "video"):
                    publisher.set_muted(track_id, False)
            elif message["type"] == "snapshot":
                reply = {
                    "cpu": cpu_seconds(),
                    "forwarded": sum(
                        s.packets_sent for p in conference.participants for s in p.subscriptions
                    ),
                    "received": sum(
                        conference.published_track(t).packets_received for t in ("audio", "video")
                    ),
                }
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()

    listener = await asyncio.start_server(handle, "127.0.0.1", port)
    print("READY", flush=True)
    async with listener:
        await listener.serve_forever()


# ------------------------------------------------------------------------------ clients


async def clients_main(port: int, n: int, warmup: float, measure: float) -> None:
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import MediaStreamError
    from aiortc.rtp import is_rtcp

    loopback_only()
    media = prepare_media()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    pcs: list[Any] = []

    publisher = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pcs.append(publisher)
    publisher.addTransceiver(pre_encoded_track("audio", media["audio"]), direction="sendonly")
    publisher.addTransceiver(pre_encoded_track("video", media["video"]), direction="sendonly")
    await publisher.setLocalDescription(await publisher.createOffer())
    answer = await rpc(reader, writer, {"type": "publish", "sdp": publisher.localDescription.sdp})
    await publisher.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
    sent = [0]
    dtls: Any = publisher.getTransceivers()[0].sender.transport
    send_rtp = dtls._send_rtp

    async def counting_send(data: bytes) -> None:
        if not is_rtcp(data):
            sent[0] += 1
        await send_rtp(data)

    dtls._send_rtp = counting_send

    decoded = {"video": 0, "audio": 0}

    async def consume(track: Any) -> None:
        try:
            while True:
                await track.recv()
                decoded[track.kind] += 1
        except MediaStreamError:
            pass

    inodes: set[int] = set()
    filters: list[Any] = []
    consumers: list[asyncio.Task[None]] = []
    for i in range(n):
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pcs.append(pc)
        if i == 0:
            pc.on("track", lambda track: consumers.append(asyncio.ensure_future(consume(track))))
        offer = await rpc(reader, writer, {"type": "subscribe", "id": f"s{i}"})
        await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await rpc(
            reader, writer, {"type": "answer", "id": f"s{i}", "sdp": pc.localDescription.sdp}
        )
    deadline = time.monotonic() + 30
    sinks = pcs[2:]
    while time.monotonic() < deadline and len(inodes) < len(sinks):
        for pc in sinks:
            sink: Any = pc.getTransceivers()[0].receiver.transport
            if sink.state == "connected" and id(pc) not in {f[1] for f in filters}:
                sock = sink.transport._connection._nominated[1].protocol.transport._sock
                filters.append((drop_rtp_in_kernel(sock), id(pc)))
                inodes.add(socket_inode(sock))
        await asyncio.sleep(0.1)
    await rpc(reader, writer, {"type": "go"})
    await asyncio.sleep(warmup)

    async def snapshot() -> dict[str, Any]:
        server = await rpc(reader, writer, {"type": "snapshot"})
        return {
            "t": time.monotonic(),
            "sent": sent[0],
            "drops": kernel_drops(inodes),
            "client_cpu": cpu_seconds(),
            "decoded": dict(decoded),
            **server,
        }

    before = await snapshot()
    await asyncio.sleep(measure)
    after = await snapshot()
    elapsed = after["t"] - before["t"]
    published = (after["sent"] - before["sent"]) / elapsed
    forwarded = (after["forwarded"] - before["forwarded"]) / elapsed
    cpu = (after["cpu"] - before["cpu"]) / elapsed
    delivered = (after["drops"] - before["drops"]) / elapsed
    result = {
        "n": n,
        "sinks_connected": len(inodes),
        "sfu_cpu_percent": round(cpu * 100, 1),
        "publisher_pps": round(published, 1),
        "sfu_received_pps": round((after["received"] - before["received"]) / elapsed, 1),
        "clients_cpu_percent": round(
            (after["client_cpu"] - before["client_cpu"]) / elapsed * 100, 1
        ),
        "forwarded_pps": round(forwarded, 1),
        "us_per_forwarded_packet": round(cpu * 1e6 / forwarded, 2) if forwarded else None,
        "delivery_ratio": round(delivered / (published * len(sinks)), 4) if sinks else None,
        "verifier_video_fps": round(
            (after["decoded"]["video"] - before["decoded"]["video"]) / elapsed, 2
        ),
        "verifier_audio_fps": round(
            (after["decoded"]["audio"] - before["decoded"]["audio"]) / elapsed, 2
        ),
    }
    print("RESULT " + json.dumps(result), flush=True)
    os._exit(0)  # skip tearing down hundreds of peer connections


# ------------------------------------------------------------------------------ orchestration


def run(n: int, args: argparse.Namespace) -> dict[str, Any]:
    port = 20000 + os.getpid() % 20000
    me = os.path.abspath(__file__)
    sfu = subprocess.Popen(
        [sys.executable, me, "sfu", "--port", str(port), "--cpu", str(args.sfu_cpu)]
        + (["--port-per-connection"] if args.port_per_connection else []),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert sfu.stdout is not None
        ready = sfu.stdout.readline().strip()
        if ready != "READY":
            raise RuntimeError(f"SFU did not start: {ready} {sfu.communicate()[1][-2000:]}")
        clients = subprocess.run(
            [
                sys.executable,
                me,
                "clients",
                "--port",
                str(port),
                "--n",
                str(n),
                "--warmup",
                str(args.warmup),
                "--measure",
                str(args.measure),
                "--cpu",
                str(args.client_cpu),
            ],
            capture_output=True,
            text=True,
            timeout=90,
        )
    finally:
        sfu.kill()
        sfu.wait()
    for line in clients.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[7:])
            return result
    raise RuntimeError(f"clients failed: {(clients.stdout + clients.stderr)[-2000:]}")


def lossless(result: dict[str, Any]) -> bool:
    delivery = result["delivery_ratio"]
    return (
        (delivery is None or delivery >= 0.99)
        and result["verifier_video_fps"] >= 29
        and result["verifier_audio_fps"] >= 48
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("role", nargs="?", default="bench", choices=["bench", "sfu", "clients"])
    parser.add_argument("--quick", action="store_true", help="N = 10, 50 with short windows")
    parser.add_argument("--ns", default="50,100,150,200,250,300,350,400")
    parser.add_argument("--warmup", type=float, default=4.0)
    parser.add_argument("--measure", type=float, default=6.0)
    parser.add_argument("--sfu-cpu", type=int, default=0)
    parser.add_argument("--client-cpu", type=int, default=1)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--n", type=int, default=0)
    parser.add_argument("--cpu", type=int, default=0)
    parser.add_argument(
        "--port-per-connection",
        action="store_true",
        help="a UDP socket per connection instead of one shared media port",
    )
    args = parser.parse_args()
    if args.role != "bench":
        os.sched_setaffinity(0, {args.cpu})
        if args.role == "sfu":
            asyncio.run(sfu_main(args.port, args.port_per_connection))
        else:
            asyncio.run(clients_main(args.port, args.n, args.warmup, args.measure))
        return

    prepare_media()
    if args.quick:
        ns, args.warmup, args.measure = [10, 50], 4.0, 4.0
    else:
        ns = [int(n) for n in args.ns.split(",")]
    started = time.monotonic()
    results = []
    print(
        f"{'N':>5} {'SFU CPU %':>9} {'fwd pkt/s':>10} {'us/pkt':>7} {'delivery':>9} "
        f"{'verifier v/a fps':>17}"
    )
    for n in ns:
        result = run(n, args)
        results.append(result)
        print(
            f"{n:>5} {result['sfu_cpu_percent']:>9} {result['forwarded_pps']:>10} "
            f"{result['us_per_forwarded_packet']!s:>7} {result['delivery_ratio']!s:>9} "
            f"{result['verifier_video_fps']:>8}/{result['verifier_audio_fps']}",
            flush=True,
        )
        if not lossless(result) or time.monotonic() - started > 150:
            break
    ok = [r for r in results if lossless(r)]
    if len(ok) >= 2:
        xs = [r["forwarded_pps"] for r in ok]
        ys = [r["sfu_cpu_percent"] / 100 for r in ok]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
            (x - mx) ** 2 for x in xs
        )
        print(
            f"marginal CPU per forwarded packet: {slope * 1e6:.1f} us "
            f"(fixed {100 * (my - slope * mx):.1f} % of a core)"
        )
    if ok:
        best = ok[-1]
        print(f"CPU per forwarded packet at N={best['n']}: {best['us_per_forwarded_packet']} us")
        print(
            f"largest N without frame loss: {best['n']}"
            + ("" if len(ok) < len(results) else " (not saturated: try larger --ns)")
        )
    else:
        print("frame loss at every N tried")


if __name__ == "__main__":
    main()
