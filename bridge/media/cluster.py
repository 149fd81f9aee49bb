"""What media nodes and the bridge share in Redis, as LiveKit does: a registry of live nodes
with their load, which node carries which conference, and a lock on placing one.

Keys (under ``redis.prefix``): ``node:<id>`` a node's report, which expires unless renewed
(a node is alive while its report is fresh); ``nodes`` the ids ever seen; ``conference:<id>``
the node carrying the conference; ``placing:<id>`` the placement lock. Channels ``to:<id>``
and ``from:<id>`` carry each node's control channel (:class:`~.redis_link.RedisLink`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
import asyncio
import json
import secrets

import redis.asyncio as redis

from .select import Load, least_loaded

REPORT_INTERVAL_S = 2.0
REPORT_TTL_MS = 4000
"""A node that has not reported for this long is dead: noticed within 5 s."""
LOCK_TTL_MS = 5000
LOCK_WAIT_S = 5.0


@dataclass(frozen=True)
class NodeReport:
    node_id: str
    url: str
    """Where clients reach the node's signalling (its public URL)."""
    participants: int
    conferences: int
    capacity: int
    """Its media workers (cores)."""
    accepting: bool
    figures: dict[str, object]
    sequence: int
    """Counts the node's reports: a new one replaces what was placed since the last."""

    def load(self, placed_since_report: int) -> Load:
        return Load(
            self.node_id,
            self.participants,
            self.conferences,
            placed_since_report,
            accepting=self.accepting,
            capacity=self.capacity,
        )


class Cluster:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def report(self, report: NodeReport) -> None:
        """Renew a node's report (every :data:`REPORT_INTERVAL_S`)."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.set(
                self.key("node", report.node_id), json.dumps(asdict(report)), px=REPORT_TTL_MS
            )
            pipe.sadd(self.key("nodes"), report.node_id)
            await pipe.execute()

    async def withdraw(self, node_id: str) -> None:
        """A node stopping leaves the registry at once."""
        await self.client.delete(self.key("node", node_id))

    async def live_nodes(self) -> dict[str, NodeReport]:
        """Every node whose report is fresh; those that went are forgotten."""
        ids = sorted(
            member.decode() if isinstance(member, bytes) else member
            for member in await self.client.smembers(self.key("nodes"))
        )
        if not ids:
            return {}
        values = await self.client.mget([self.key("node", node_id) for node_id in ids])
        live = {}
        for node_id, value in zip(ids, values, strict=True):
            if value is None:
                await self.client.srem(self.key("nodes"), node_id)
            else:
                live[node_id] = NodeReport(**json.loads(value))
        return live

    async def node_of(self, conference_id: str) -> str | None:
        value = await self.client.get(self.key("conference", conference_id))
        return value.decode() if isinstance(value, bytes) else value

    async def assign(self, conference_id: str, node_id: str) -> None:
        await self.client.set(self.key("conference", conference_id), node_id)

    async def release(self, conference_id: str, node_id: str) -> None:
        """The conference closed on the node: forget where it was (if still there)."""
        if await self.node_of(conference_id) == node_id:
            await self.client.delete(self.key("conference", conference_id))

    async def place(self, conference_id: str, loads: list[Load]) -> str | None:
        """The live node carrying the conference, placed now on the least loaded one if it
        has none (under a lock, so that two placements of one conference agree). ``loads``:
        the live nodes'."""
        live = {load.key for load in loads}
        current = await self.node_of(conference_id)
        if current in live:
            return current
        lock = self.key("placing", conference_id)
        token = secrets.token_hex(8)
        deadline = asyncio.get_running_loop().time() + LOCK_WAIT_S
        while not await self.client.set(lock, token, nx=True, px=LOCK_TTL_MS):
            if asyncio.get_running_loop().time() > deadline:
                return None
            await asyncio.sleep(0.05)
        try:
            current = await self.node_of(conference_id)
            if current in live:
                return current
            chosen = least_loaded(loads)
            if chosen is not None:
                await self.assign(conference_id, chosen)
            return chosen
        finally:
            if await self.client.get(lock) in (token, token.encode()):
                await self.client.delete(lock)
