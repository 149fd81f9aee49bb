"""The bridge's media on media nodes, other machines found through Redis (``redis.url``).

The token service places each conference on the least loaded live node (:class:`Cluster`)
and sends the client to that node's public URL; the node asks the bridge, over its control
channel, whether a connecting client is admitted, and reports presence back, so that call
history, moderation and the rest work as with local workers. A node whose report goes
stale is gone: its conferences end, and new ones go elsewhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
import asyncio
import contextlib
import logging

from aiohttp import web
from mautrix.types import RoomID
from yarl import URL
import redis.asyncio as redis

from ..db import Room
from .channel import Channel, ChannelClosed, Message
from .cluster import Cluster, NodeReport
from .errors import StartupError
from .plane import MediaFigures, MediaPlane
from .redis_link import RedisLink
from .roster import Presence

if TYPE_CHECKING:
    from ..focus.tokens import FocusTokens
    from ..livekit.host import Admission

log = logging.getLogger("mau.media.nodes")

POLL_INTERVAL_S = 1.0
GONE = "the media node of this call stopped"

AdmissionCheck = Callable[[str], Awaitable[dict[str, Any]]]
"""Decides on a token a node's client presents: ``conference_id`` and ``can_publish``, or an
HTTP ``status`` and ``text`` to refuse with."""


def websocket_url(url: str) -> str:
    parsed = URL(url)
    return str(parsed.with_scheme("wss" if parsed.scheme == "https" else "ws")).rstrip("/")


@dataclass
class NodeLink:
    """One live media node as the bridge sees it."""

    report: NodeReport
    link: RedisLink
    channel: Channel
    placed_since_report: int = 0
    conferences: set[str] = field(default_factory=set)


class NodePlane(MediaPlane):
    def __init__(self, url: str, prefix: str) -> None:
        super().__init__()
        self._url = url
        self._prefix = prefix
        self.cluster: Cluster | None = None
        self.admission_check: AdmissionCheck | None = None
        """Set by the bridge (the LiveKit signalling's checks)."""
        self.nodes: dict[str, NodeLink] = {}
        self._owner: dict[str, str] = {}
        """By conference id: the node carrying it, as its presence says."""
        self._tokens: FocusTokens | None = None
        self._poller: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        client = redis.from_url(self._url)
        try:
            await client.ping()
        except (redis.RedisError, OSError) as e:
            await client.aclose()
            raise StartupError(f"redis.url: cannot connect to Redis: {e}") from e
        self.cluster = Cluster(client, self._prefix)
        await self._poll()
        self._poller = asyncio.create_task(self._poll_forever())
        log.info("Media on nodes through Redis: %d live", len(self.nodes))

    async def end_sessions(self) -> None:
        """The bridge stops: the calls on its nodes end (nobody could admit or record)."""
        await asyncio.gather(
            *(node.channel.request("end_sessions") for node in self.nodes.values()),
            return_exceptions=True,
        )

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
        for node_id in list(self.nodes):
            await self._forget(node_id)
        for task in list(self._tasks):
            task.cancel()
        if self.cluster is not None:
            await self.cluster.client.aclose()

    def use_tokens(self, tokens: FocusTokens) -> None:
        self._tokens = tokens
        for node in self.nodes.values():
            self._send_tokens(node)

    def _send_tokens(self, node: NodeLink) -> None:
        if self._tokens is not None:
            node.channel.notify(
                "tokens", key=self._tokens.key_hex(), lifetime=self._tokens.lifetime_s
            )

    # ------------------------------------------------------------------ the registry

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL_S)
            try:
                await self._poll()
            except (redis.RedisError, OSError) as e:
                log.warning("Cannot read the media nodes from Redis: %s", e)

    async def _poll(self) -> None:
        assert self.cluster is not None
        live = await self.cluster.live_nodes()
        for node_id in [node_id for node_id in self.nodes if node_id not in live]:
            log.warning("Media node %s is gone; its calls ended", node_id)
            await self._forget(node_id)
        for node_id, report in live.items():
            node = self.nodes.get(node_id)
            if node is None:
                await self._connect(report)
            elif report.sequence != node.report.sequence:
                node.report = report
                node.placed_since_report = 0

    async def _connect(self, report: NodeReport) -> None:
        assert self.cluster is not None
        node_id = report.node_id
        link = RedisLink(
            self.cluster.client, self.cluster.key("from", node_id), self.cluster.key("to", node_id)
        )
        await link.open()
        channel = Channel(
            link, self._on_request, lambda message: self._on_notice(node_id, message)
        )
        node = self.nodes[node_id] = NodeLink(report, link, channel)
        task = asyncio.create_task(channel.run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        channel.notify("hello")
        self._send_tokens(node)
        log.info("Media node %s joined (%s)", node_id, report.url)

    async def _forget(self, node_id: str) -> None:
        node = self.nodes.pop(node_id)
        for conference_id in list(node.conferences):
            if self._owner.get(conference_id) == node_id:
                del self._owner[conference_id]
            self.roster.drop(conference_id, GONE)
        await node.link.close()

    # ------------------------------------------------------------------ the channel

    async def _on_request(self, message: Message) -> Any:
        op = message["op"]
        if op == "may_publish":
            return await self.may_publish(message["room_id"], message["user_id"])
        if op == "admit" and self.admission_check is not None:
            return await self.admission_check(message["token"])
        raise ValueError(f"unknown request {op}")

    def _on_notice(self, node_id: str, message: Message) -> None:
        node = self.nodes.get(node_id)
        if node is None:
            return
        op = message["op"]
        if op == "presence":
            presence = Presence.from_wire(message["presence"])
            self._owner[presence.conference_id] = node_id
            node.conferences.add(presence.conference_id)
            self.roster.apply(presence)
        elif op == "closed":
            conference_id = message["conference_id"]
            node.conferences.discard(conference_id)
            if self._owner.get(conference_id) == node_id:
                del self._owner[conference_id]
            if self.cluster is not None:
                task = asyncio.create_task(self.cluster.release(conference_id, node_id))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        elif op == "hello":
            self._send_tokens(node)  # the node (re)started after we met it

    # ------------------------------------------------------------------ placement

    async def _place(self, conference_id: str) -> NodeLink | None:
        assert self.cluster is not None
        loads = [node.report.load(node.placed_since_report) for node in self.nodes.values()]
        node_id = await self.cluster.place(conference_id, loads)
        node = self.nodes.get(node_id) if node_id else None
        if node is not None and conference_id not in node.conferences:
            node.placed_since_report += 1
            node.conferences.add(conference_id)
            log.info("Conference %s placed on media node %s", conference_id, node_id)
        return node

    async def url_for(self, room_id: RoomID) -> str | None:
        room = await Room.get_or_create(room_id)
        node = await self._place(room.conference_id)
        return websocket_url(node.report.url) if node else None

    # ------------------------------------------------------------------ the plane

    def figures(self) -> MediaFigures:
        totals = MediaFigures()
        for node in self.nodes.values():
            totals.add(MediaFigures.from_wire(node.report.figures))
        return totals

    def accepts_newcomers(self, conference_id: str) -> bool:
        return any(node.report.accepting for node in self.nodes.values())

    async def serve_signalling(
        self, request: web.Request, admission: Admission
    ) -> web.StreamResponse:
        raise web.HTTPServiceUnavailable(
            text="Calls run on media nodes: ask for a new token, which names one."
        )

    async def command(self, conference_id: str, name: str, **args: Any) -> Any:
        if name == "leg_open":
            node = await self._place(conference_id)
        else:
            owner = self._owner.get(conference_id)
            node = self.nodes.get(owner) if owner else None
        if node is None:
            return None
        with contextlib.suppress(ChannelClosed):
            return await node.channel.request(
                "command", conference=conference_id, name=name, args=args
            )
        return None
