"""The control channel between the bridge and a media worker: JSON messages over a
WebSocket on the worker's Unix socket. Either side sends requests (answered by id) and
notices (no answer), in order."""

from __future__ import annotations

from typing import Any, Protocol
from collections.abc import AsyncIterator, Awaitable, Callable
import asyncio
import contextlib
import itertools
import json
import logging

from aiohttp import WSMsgType

log = logging.getLogger("mau.media.channel")

CLOSE_TIMEOUT_S = 2.0

Message = dict[str, Any]
RequestHandler = Callable[[Message], Awaitable[Any]]
NoticeHandler = Callable[[Message], None]


class Socket(Protocol):
    """What a channel runs on: a WebSocket, or a Redis link to a media node."""

    async def send_str(self, data: str) -> None: ...

    async def close(self) -> object: ...

    def __aiter__(self) -> AsyncIterator[Any]: ...


class ChannelClosed(ConnectionError):
    """The other side is gone (a worker died, or the bridge stopped)."""


class RemoteError(Exception):
    """The other side failed to carry out a request."""


class Channel:
    def __init__(
        self,
        ws: Socket,
        on_request: RequestHandler,
        on_notice: NoticeHandler,
    ) -> None:
        self._ws = ws
        self._on_request = on_request
        self._on_notice = on_notice
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._outbox: asyncio.Queue[Message | None] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self._writer: asyncio.Task[None] | None = None
        self.closed = False

    async def run(self) -> None:
        """Serve the channel until either side closes it."""
        writer = self._writer = asyncio.create_task(self._write())
        try:
            async for message in self._ws:
                if message.type != WSMsgType.TEXT:
                    break
                self._receive(json.loads(message.data))
        finally:
            self.closed = True
            self._outbox.put_nowait(None)
            await writer
            for task in self._tasks:
                task.cancel()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ChannelClosed("the other side is gone"))
            self._pending.clear()
            await self._ws.close()

    async def close(self) -> None:
        """Close the channel once what is queued is sent."""
        self._outbox.put_nowait(None)
        if self._writer is not None:
            await asyncio.wait([self._writer], timeout=CLOSE_TIMEOUT_S)
        await self._ws.close()

    def notify(self, op: str, **fields: Any) -> None:
        if not self.closed:
            self._outbox.put_nowait({"op": op, **fields})

    async def request(self, op: str, **fields: Any) -> Any:
        """Send a request and wait for its answer; raises ChannelClosed or RemoteError."""
        if self.closed:
            raise ChannelClosed("the other side is gone")
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        self._outbox.put_nowait({"op": op, "id": request_id, **fields})
        try:
            return await future
        finally:
            self._pending.pop(request_id, None)

    def _receive(self, message: Message) -> None:
        if "reply" in message:
            future = self._pending.get(message["reply"])
            if future is None or future.done():
                return
            if "error" in message:
                future.set_exception(RemoteError(message["error"]))
            else:
                future.set_result(message.get("result"))
        elif "id" in message:
            task = asyncio.create_task(self._answer(message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            try:
                self._on_notice(message)
            except Exception:
                log.exception("Handling a %s notice failed", message.get("op"))

    async def _answer(self, message: Message) -> None:
        try:
            result = await self._on_request(message)
        except Exception as e:
            log.exception("Request %s failed", message.get("op"))
            self._outbox.put_nowait({"reply": message["id"], "error": f"{type(e).__name__}: {e}"})
        else:
            self._outbox.put_nowait({"reply": message["id"], "result": result})

    async def _write(self) -> None:
        while (message := await self._outbox.get()) is not None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self._ws.send_str(json.dumps(message))
