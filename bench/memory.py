"""Memory per participant of the SFU alone, and where it goes.

One SFU process (``sfu.SFU`` with the shared media port, as the bridge runs it) hosts a
meeting of N participants as LiveKit clients use it: each has a publisher connection (audio +
video, offered by the client) and a subscriber connection (offered by the SFU) that receives
every other participant's two tracks, so 2(N-1) sender slots. ``--listeners L`` adds
participants who only receive (a subscriber connection with 2N slots), so ``--n 1
--listeners 100`` is ``bench.compare``'s fan-out. The clients are aiortc peers in this
process, on 127.0.0.1. A warm-up meeting of two joins first and stays, so that imports and
first-use caches are not counted (``bench.compare`` counts them: it divides the growth of a
freshly started bridge).

Like ``bench.compare`` (which reads the whole bridge's RSS), the SFU's figures are taken once
every connection is up, before any media flows; ``--media S`` then lets the publishers send
for S seconds and measures again (retransmission histories filling up). Printed per
participant: resident memory, split by mapping (C heap, anonymous mappings such as Python's
arenas) and by glibc's account (in use, free); Python allocations (``tracemalloc``: the rest of
what malloc has in use is native, such as OpenSSL's) by file, line and the SFU line that caused
them; the objects added, by type.

    .venv/bin/python -m bench.memory                   # 10-person meeting, ~5 s
    .venv/bin/python -m bench.memory --media 12 --top 40
    .venv/bin/python -m bench.memory --n 1 --listeners 100 --no-trace
    .venv/bin/python -m bench.memory --no-trace        # RSS without tracemalloc's overhead

Run from the tree to measure (``PYTHONPATH`` set to it); root is not needed.
"""

from __future__ import annotations

from typing import Any
from collections import Counter
import argparse
import asyncio
import ctypes
import gc
import json
import os
import subprocess
import sys
import sysconfig
import threading
import time
import tracemalloc

from .sfu_fanout import rpc

_STDLIB = sysconfig.get_paths()["stdlib"]
_PAGE = os.sysconf("SC_PAGE_SIZE")
SETUP_TIMEOUT_S = 60.0
TABLES = {
    "files": "by file allocating (innermost frame outside the standard library)",
    "sites": "by line allocating",
    "causes": "by SFU line causing it (outermost frame in sfu/)",
    "pairs": "by file allocating and SFU line causing it",
}


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def mappings() -> Counter[str]:
    """Resident bytes by kind of mapping: the C heap (``brk``), anonymous mappings (large
    ``malloc`` blocks, Python's arenas, thread stacks) and files (code)."""
    found: Counter[str] = Counter()
    kind = ""
    with open("/proc/self/smaps") as f:
        for line in f:
            fields = line.split()
            if not line[0].isupper():
                path = fields[5] if len(fields) > 5 else ""
                kind = "heap" if path == "[heap]" else "file" if path.startswith("/") else "anon"
            elif fields[0] == "Rss:":
                found[kind] += int(fields[1]) * 1024
    return found


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            *("arena", "ordblks", "smblks", "hblks", "hblkhd"),
            *("usmblks", "fsmblks", "uordblks", "fordblks", "keepcost"),
        )
    ]


def malloc_use() -> Counter[str]:
    """glibc's own account: bytes in use in its heaps, free in them, and in blocks it mapped
    on their own (``mmap``); empty where glibc lacks ``mallinfo2``."""
    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
    except AttributeError:
        return Counter()
    mallinfo2.restype = _MallInfo2
    info = mallinfo2()
    return Counter(
        {"malloc used": info.uordblks, "malloc free": info.fordblks, "mmap": info.hblkhd}
    )


# ------------------------------------------------------------------------------ SFU process


def _short(filename: str) -> str:
    for marker in ("site-packages/", "/work/"):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
    return filename.removeprefix(_STDLIB + "/")


def _site(traceback: tracemalloc.Traceback) -> tuple[str, str]:
    """Where an allocation was made: the innermost frame outside the standard library (the
    library or SFU line that asked for it), and the outermost frame in ``sfu/`` (which part of
    the SFU caused it)."""
    frames = list(traceback)  # oldest first
    inner = next((f for f in reversed(frames) if not f.filename.startswith(_STDLIB)), frames[-1])
    ours = next((f for f in frames if "/sfu/" in f.filename), None)
    cause = f"{_short(ours.filename)}:{ours.lineno}" if ours is not None else "-"
    return f"{_short(inner.filename)}:{inner.lineno}", cause


class Probe:
    """Readings of this process: RSS, tracemalloc snapshot, live objects by type."""

    def __init__(self) -> None:
        self.rss = 0
        self.mappings: Counter[str] = Counter()
        self.snapshot: tracemalloc.Snapshot | None = None
        self.types: Counter[str] = Counter()

    def mark(self) -> None:
        gc.collect()
        self.rss = rss()
        self.mappings = mappings() + malloc_use()
        self.types = Counter(type(o).__qualname__ for o in gc.get_objects())
        if tracemalloc.is_tracing():
            self.snapshot = tracemalloc.take_snapshot()

    def report(self, n: int, top: int) -> dict[str, Any]:
        gc.collect()
        result: dict[str, Any] = {
            "rss_kb": round((rss() - self.rss) / n / 1024, 1),
            "threads": threading.active_count(),
        }
        found = mappings() + malloc_use()
        found.subtract(self.mappings)
        result["mappings"] = {kind: round(size / n / 1024, 1) for kind, size in found.items()}
        types = Counter(type(o).__qualname__ for o in gc.get_objects())
        types.subtract(self.types)
        result["types"] = [(name, count / n) for name, count in types.most_common(top)]
        if self.snapshot is None:
            return result
        diff = tracemalloc.take_snapshot().compare_to(self.snapshot, "traceback")
        tables: dict[str, Counter[str]] = {name: Counter() for name in TABLES}
        for stat in diff:
            site, cause = _site(stat.traceback)
            file = site.rsplit(":", 1)[0]
            for name, key in zip(TABLES, (file, site, cause, f"{file} <- {cause}"), strict=True):
                tables[name][key] += stat.size_diff
        result["python_kb"] = round(sum(s.size_diff for s in diff) / n / 1024, 1)
        for name, table in tables.items():
            result[name] = [
                (key, round(size / n / 1024, 1)) for key, size in table.most_common(top)
            ]
        return result


async def sfu_main(port: int, trace: bool) -> None:
    from sfu import SFU, MediaSettings, TransportRole

    if trace:
        tracemalloc.start(40)
    server = SFU(MediaSettings(bind_addresses=("127.0.0.1",)))
    await server.start()
    probe = Probe()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            message = json.loads(line)
            kind = message["type"]
            reply: dict[str, Any] = {}
            name = message.get("conference", "")
            conference = server.conference(name) or (
                server.create_conference(name) if name else None
            )
            if kind == "publish":
                assert conference is not None
                participant = conference.join(message["id"])
                transport = participant.add_transport(TransportRole.PUBLISHER)
                reply["sdp"] = await transport.accept_offer(message["sdp"], None)
            elif kind == "subscribe":
                assert conference is not None
                participant = conference.participant(message["id"]) or conference.join(
                    message["id"]
                )
                transport = participant.add_transport(TransportRole.SUBSCRIBER)
                reply["sdp"] = await transport.create_offer()
            elif kind == "answer":
                assert conference is not None
                participant = conference.participant(message["id"])
                assert participant is not None
                await participant.transports[-1].accept_answer(message["sdp"])
            elif kind == "active":
                assert conference is not None
                subscriptions = [s for p in conference.participants for s in p.subscriptions]
                reply["active"] = all(s.active for s in subscriptions)
            elif kind == "mark":
                probe.mark()
            elif kind == "report":
                reply = probe.report(message["n"], message["top"])
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()

    listener = await asyncio.start_server(handle, "127.0.0.1", port)
    print("READY", flush=True)
    async with listener:
        await listener.serve_forever()


# ------------------------------------------------------------------------------ clients


async def meeting(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    name: str,
    n: int,
    listeners: int,
    media: dict[str, list[bytes]],
    gate: asyncio.Event,
) -> list[Any]:
    """``n`` participants publish, then each receives the others, and ``listeners`` receive
    them all without publishing; returns the clients' connections."""
    from aiortc import RTCPeerConnection, RTCSessionDescription

    from .common import pre_encoded_track
    from .peers import rtc_configuration

    pcs = []
    for i in range(n):
        pc = RTCPeerConnection(rtc_configuration())
        for kind in ("audio", "video"):
            pc.addTransceiver(pre_encoded_track(kind, media[kind], gate), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        message = {"type": "publish", "conference": name, "id": f"p{i}"}
        answer = await rpc(reader, writer, message | {"sdp": pc.localDescription.sdp})
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        pcs.append(pc)
    receivers = [f"p{i}" for i in range(n) if n > 1] + [f"l{i}" for i in range(listeners)]
    for participant in receivers:
        pc = RTCPeerConnection(rtc_configuration())
        message = {"type": "subscribe", "conference": name, "id": participant}
        offer = await rpc(reader, writer, message)
        await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        message = {"type": "answer", "conference": name, "id": participant}
        await rpc(reader, writer, message | {"sdp": pc.localDescription.sdp})
        pcs.append(pc)
    deadline = time.monotonic() + SETUP_TIMEOUT_S
    while not (
        all(pc.connectionState == "connected" for pc in pcs)
        and (await rpc(reader, writer, {"type": "active", "conference": name}))["active"]
    ):
        if time.monotonic() > deadline:
            raise TimeoutError(f"meeting {name}: {[pc.connectionState for pc in pcs]}")
        await asyncio.sleep(0.1)
    return pcs


def show(title: str, result: dict[str, Any], n: int, listeners: int) -> None:
    print(f"\n== {title}: per participant ({n} publishing, {listeners} listening)")
    print(f"RSS {result['rss_kb']} KB ({result['threads']} threads in the SFU)", end="")
    kinds = ", ".join(f"{kind} {size}" for kind, size in sorted(result["mappings"].items()))
    print(f"; resident KB by mapping: {kinds}", end="")
    if "python_kb" in result:
        print(f", Python allocations {result['python_kb']} KB (tracemalloc)")
        for name, heading in TABLES.items():
            print(f"-- {heading}, KB")
            for key, size in result[name]:
                print(f"{size:>8} {key}")
    else:
        print()
    print("-- objects added, by type (count)")
    for name, count in result["types"]:
        print(f"{count:>8.1f} {name}")


async def clients_main(port: int, n: int, listeners: int, media_s: float, top: int) -> None:
    from .common import loopback_only, prepare_media

    loopback_only()
    media = prepare_media()
    gate = asyncio.Event()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    pcs = await meeting(reader, writer, "warmup", 2, 0, media, gate)
    await rpc(reader, writer, {"type": "mark"})
    pcs += await meeting(reader, writer, "measured", n, listeners, media, gate)
    report = {"type": "report", "n": n + listeners, "top": top}
    show("connected, no media", await rpc(reader, writer, report), n, listeners)
    if media_s:
        gate.set()
        await asyncio.sleep(media_s)
        show(f"after {media_s} s of media", await rpc(reader, writer, report), n, listeners)
    for pc in pcs:
        await pc.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("role", nargs="?", default="bench", choices=["bench", "sfu"])
    parser.add_argument("--n", type=int, default=10, help="participants who publish")
    parser.add_argument("--listeners", type=int, default=0, help="participants who only receive")
    parser.add_argument("--media", type=float, default=0.0, help="seconds of media, then again")
    parser.add_argument("--top", type=int, default=25, help="rows per table")
    parser.add_argument("--no-trace", action="store_true", help="no tracemalloc in the SFU")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.role == "sfu":
        asyncio.run(sfu_main(args.port, not args.no_trace))
        return
    port = 20000 + os.getpid() % 20000
    command = [sys.executable, "-m", "bench.memory", "sfu", "--port", str(port)]
    sfu = subprocess.Popen(
        command + (["--no-trace"] if args.no_trace else []), stdout=subprocess.PIPE, text=True
    )
    try:
        assert sfu.stdout is not None
        if sfu.stdout.readline().strip() != "READY":
            raise RuntimeError("the SFU did not start")
        asyncio.run(clients_main(port, args.n, args.listeners, args.media, args.top))
    finally:
        sfu.kill()
        sfu.wait()


if __name__ == "__main__":
    main()
