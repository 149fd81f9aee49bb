"""A control channel between the bridge and a media node through Redis pub/sub: each side
publishes to the other's channel and reads its own. It looks to :class:`Channel` like the
WebSocket a local worker's channel runs on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
import asyncio

from aiohttp import WSMsgType
import redis.asyncio as redis

POLL_S = 1.0


@dataclass(frozen=True)
class LinkMessage:
    type: WSMsgType
    data: str


class RedisLink:
    def __init__(self, client: redis.Redis, inbox: str, outbox: str) -> None:
        self._client = client
        self._inbox = inbox
        self._outbox = outbox
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._closed = asyncio.Event()

    async def open(self) -> None:
        """Subscribe to the inbox: what the other side sends from now on arrives."""
        await self._pubsub.subscribe(self._inbox)

    async def send_str(self, data: str) -> None:
        await self._client.publish(self._outbox, data)

    async def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            await self._pubsub.aclose()

    def __aiter__(self) -> AsyncIterator[LinkMessage]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[LinkMessage]:
        while not self._closed.is_set():
            try:
                message = await self._pubsub.get_message(timeout=POLL_S)
            except (redis.ConnectionError, RuntimeError):
                return
            if message is not None and message["type"] == "message":
                data = message["data"]
                yield LinkMessage(
                    WSMsgType.TEXT, data.decode() if isinstance(data, bytes) else data
                )
