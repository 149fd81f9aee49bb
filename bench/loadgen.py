"""One bounded run of one scenario against one server, in the load generator process.

Meetings are joined through the server's signalling (publishers first), then every receiving
connection becomes a sink or a verifier once it is connected with all its streams. Media is
gated until then, so that set-up does not compete with forwarding. After a warm-up, a window
is measured; then join probes time a new listener from its first request to its first decoded
video frame. The result is printed as one ``RESULT {json}`` line.
"""

from __future__ import annotations

from typing import Any, Protocol
from dataclasses import dataclass
import asyncio
import json
import os
import statistics
import subprocess
import time

from .common import (
    cpu_seconds,
    drops_by_socket,
    loopback_only,
    prepare_media,
    process_cpu_seconds,
    process_rss,
    thread_waits,
)
from .peers import Peer, Publisher, SendTimes

CONCURRENCY = 8
SETUP_TIMEOUT_S = 90.0
PROBES = 3
PROBE_TIMEOUT_S = 10.0
IN_FLIGHT_S = 0.5
VERIFIED_MEETINGS = 2


@dataclass(frozen=True)
class Scenario:
    """``meetings`` rooms, each with ``publishers`` participants who publish audio + video and
    receive each other, and ``listeners`` who only receive."""

    meetings: int
    publishers: int
    listeners: int

    @property
    def participants(self) -> int:
        return self.meetings * (self.publishers + self.listeners)


class Driver(Protocol):
    async def open(self) -> None: ...

    async def join_publisher(self, meeting: int, publisher: Publisher) -> Peer: ...

    async def join_receiver(self, peer: Peer) -> Peer: ...


class Run:
    def __init__(
        self,
        driver: Driver,
        scenario: Scenario,
        server_pid: int,
        warmup: float,
        measure: float,
        profile: str = "",
    ) -> None:
        self.driver = driver
        self.scenario = scenario
        self.server_pid = server_pid
        self.warmup = warmup
        self.measure = measure
        self.profile = profile
        self.media = prepare_media()
        self.gate = asyncio.Event()
        self.send_times = SendTimes()
        self.peers: list[Peer] = []
        self.recording = False
        self.lags: list[float] = []
        self._limit = asyncio.Semaphore(CONCURRENCY)

    async def run(self) -> dict[str, Any]:
        await self.driver.open()
        rss_before = process_rss(self.server_pid)
        started = time.monotonic()
        await asyncio.gather(*(self._join(m) for m in range(self.scenario.meetings)))
        receivers = [peer for peer in self.peers if peer.receives]
        await self._until_receiving(receivers)
        setup_s = time.monotonic() - started
        rss_after = process_rss(self.server_pid)
        self.gate.set()
        await asyncio.sleep(self.warmup)
        before = self._snapshot()
        self.recording = True
        monitor = asyncio.create_task(self._monitor_lag())
        profiler = self._start_profiler()
        await asyncio.sleep(IN_FLIGHT_S)
        arrived_before = self._snapshot()
        await asyncio.sleep(self.measure - IN_FLIGHT_S)
        after = self._snapshot()
        await asyncio.sleep(IN_FLIGHT_S)
        arrived_after = self._snapshot()
        self.recording = False
        monitor.cancel()
        if profiler is not None:
            await asyncio.to_thread(profiler.wait)
        result = self._result(before, after, arrived_before, arrived_after)
        result.update(
            setup_s=round(setup_s, 1),
            rss_per_participant_kb=round(
                (rss_after - rss_before) / self.scenario.participants / 1024, 1
            ),
            join_ms=await self._probe_joins(),
        )
        return result

    # ------------------------------------------------------------------ set-up

    async def _join(self, meeting: int) -> None:
        scenario = self.scenario
        peers = []
        for _ in range(scenario.publishers):
            async with self._limit:
                publisher = Publisher(self.media, self.gate)
                peer = await self.driver.join_publisher(meeting, publisher)
                assert peer.pub_pc is not None
                publisher.instrument(peer.pub_pc, self.send_times)
                peers.append(peer)
        publishers = [peer.publisher for peer in peers if peer.publisher is not None]

        async def receiver(peer: Peer) -> None:
            peer.sources = [p for p in publishers if p is not peer.publisher]
            async with self._limit:
                await self.driver.join_receiver(peer)

        peers += [Peer(meeting) for _ in range(scenario.listeners)]
        await asyncio.gather(*(receiver(peer) for peer in peers))
        self.peers += peers

    async def _until_receiving(self, receivers: list[Peer]) -> None:
        """Turn each receiving connection into a verifier or a sink once it receives all:
        the first of each of the first :data:`VERIFIED_MEETINGS` meetings verifies (verifying
        costs the load generator Python time per packet)."""
        verified: set[int] = set()
        waiting = list(receivers)
        deadline = time.monotonic() + SETUP_TIMEOUT_S
        while waiting:
            if time.monotonic() > deadline:
                states = sorted({peer.describe() for peer in waiting})
                raise TimeoutError(f"{len(waiting)} of {len(receivers)} never received: {states}")
            for peer in [p for p in waiting if p.receiving()]:
                waiting.remove(peer)
                if peer.meeting < VERIFIED_MEETINGS and peer.meeting not in verified:
                    verified.add(peer.meeting)
                    peer.make_verifier(self.send_times, lambda: self.recording)
                else:
                    peer.make_sink()
            await asyncio.sleep(0.1)

    # ------------------------------------------------------------------ measurement

    def _start_profiler(self) -> subprocess.Popen[bytes] | None:
        """py-spy samples the server during the window (collapsed stacks, without stopping it)."""
        if not self.profile:
            return None
        return subprocess.Popen(
            [
                "py-spy", "record", "--pid", str(self.server_pid),
                "--duration", str(round(self.measure)), "--rate", "200", "--format", "raw",
                "--output", self.profile,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    async def _monitor_lag(self) -> None:
        """How late the load generator's loop wakes up: its own delays show in latencies."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(0.01)
            self.lags.append(loop.time() - started - 0.01)

    def _snapshot(self) -> dict[str, Any]:
        publishers = [peer.publisher for peer in self.peers if peer.publisher is not None]
        return {
            "t": time.monotonic(),
            "server_cpu": process_cpu_seconds(self.server_pid),
            "server_waits": thread_waits(self.server_pid),
            "client_cpu": cpu_seconds(),
            "sent": {id(p): (p.packets, p.video_frames, p.video_packets) for p in publishers},
            "drops": drops_by_socket({p.sink_inode for p in self.peers if p.sink_inode}),
            "verifiers": {
                id(p): (p.counts.packets, p.counts.video_frames, p.counts.video_packets)
                for p in self.peers
                if p.sink_inode is None and p.receives
            },
        }

    def _result(
        self,
        before: dict[str, Any],
        after: dict[str, Any],
        arrived_before: dict[str, Any],
        arrived_after: dict[str, Any],
    ) -> dict[str, Any]:
        """Figures of the window; what arrived is read :data:`IN_FLIGHT_S` after what was
        sent, so that packets still on their way (or queued in a briefly stalled server) at
        either end of the window count on the side they were sent."""
        elapsed = after["t"] - before["t"]
        sent = {
            key: tuple(now - then for now, then in zip(counts, before["sent"][key], strict=True))
            for key, counts in after["sent"].items()
        }
        receivers = [p for p in self.peers if p.receives]
        expected = sum(sent[id(source)][0] for p in receivers for source in p.sources)
        drops_before, drops_after = arrived_before["drops"], arrived_after["drops"]
        delivered = sum(drops_after.values()) - sum(drops_before.values())
        worst_sink = min(
            (
                (drops_after.get(p.sink_inode, 0) - drops_before.get(p.sink_inode, 0))
                / max(1, sum(sent[id(source)][0] for source in p.sources))
                for p in receivers
                if p.sink_inode
            ),
            default=None,
        )
        frame_losses = []
        video_losses = []
        for peer in receivers:
            if id(peer) not in after["verifiers"]:
                continue
            packets, frames, video = (
                a - b
                for a, b in zip(
                    arrived_after["verifiers"][id(peer)],
                    arrived_before["verifiers"][id(peer)],
                    strict=True,
                )
            )
            delivered += packets
            want = sum(sent[id(source)][1] for source in peer.sources)
            # a frame being sent at either end of the window may count on one side only
            lost = max(0, want - frames - 2 * len(peer.sources))
            frame_losses.append(lost / want if want else 1.0)
            want = sum(sent[id(source)][2] for source in peer.sources)
            video_losses.append(1 - video / want if want else 1.0)
        cpu = after["server_cpu"] - before["server_cpu"]
        latencies = sorted(x for p in receivers for x in p.counts.latencies)
        packet_loss = 1 - delivered / expected if expected else 1.0
        return {
            "measure_s": round(elapsed, 1),
            "server_cpu_pct": round(cpu / elapsed * 100, 1),
            "server_wait_pct": round(
                max(
                    wait - before["server_waits"].get(thread, 0.0)
                    for thread, wait in after["server_waits"].items()
                )
                / elapsed
                * 100,
                1,
            ),
            "client_cpu_pct": round(
                (after["client_cpu"] - before["client_cpu"]) / elapsed * 100, 1
            ),
            "published_pps": round(sum(s[0] for s in sent.values()) / elapsed, 1),
            "delivered_pps": round(delivered / elapsed, 1),
            "us_per_packet": round(cpu * 1e6 / delivered, 2) if delivered else None,
            "packet_loss_pct": round(packet_loss * 100, 2),
            "frame_loss_pct": round(max(frame_losses, default=1.0) * 100, 2),
            "verifier_video_loss_pct": round(max(video_losses, default=1.0) * 100, 2),
            "worst_sink_delivery": round(worst_sink, 4) if worst_sink is not None else None,
            "latency_p50_ms": _percentile(latencies, 0.5),
            "latency_p99_ms": _percentile(latencies, 0.99),
            "latency_samples": len(latencies),
            "client_lag_p99_ms": _percentile(sorted(self.lags), 0.99),
            "keyframe_requests": sum(
                p.publisher.keyframe_requests for p in self.peers if p.publisher is not None
            ),
        }

    async def _probe_joins(self) -> float | None:
        """Median time from a new listener's first request to its first decoded video frame."""
        times = []
        for _ in range(PROBES):
            started = time.monotonic()
            peer = Peer(0, decode=True)
            try:
                await asyncio.wait_for(self._probe(peer), PROBE_TIMEOUT_S)
            except TimeoutError:
                continue
            times.append((peer.counts.first_decoded - started) * 1000)
        return round(statistics.median(times), 1) if times else None

    async def _probe(self, peer: Peer) -> None:
        await self.driver.join_receiver(peer)
        while not peer.counts.first_decoded:
            await asyncio.sleep(0.005)


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(len(values) * q))] * 1000, 2)


async def main(
    server: str, url: str, secret: str, pid: int, scenario: Scenario, args: Any
) -> None:
    from .janus import JanusDriver
    from .ours import OursDriver

    loopback_only()
    driver: Driver = JanusDriver(url) if server == "janus" else OursDriver(url, secret.encode())
    result = await Run(driver, scenario, pid, args.warmup, args.measure, args.profile).run()
    print("RESULT " + json.dumps(result), flush=True)
    os._exit(0)  # skip tearing down hundreds of peer connections
