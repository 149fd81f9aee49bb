"""A media worker process: one asyncio loop with its own SFU and UDP port, owning whole
conferences (``python -m bridge.media.worker``, started by :mod:`bridge.media.host`).

It reads its :class:`WorkerSpec` from stdin and serves, on its Unix socket, the control
channel (``/control``) and the client signalling the bridge relays (``/rtc``, ``/rtc/v1``).
SIGTERM drains it: it tells the bridge to place no new conferences here and exits once its
conferences are over, or ``drain_grace_s`` later. It exits when the bridge goes.
"""

from __future__ import annotations

from typing import Any
from dataclasses import dataclass
from functools import partial
import asyncio
import json
import logging
import logging.config
import os
import pickle
import signal
import sys
import time

from aiohttp import web

from sfu import MediaSettings

from ..focus.tokens import FocusTokens, InvalidFocusToken
from ..livekit.host import Admission
from ..livekit.protocol import MAX_MESSAGE_BYTES, ProtocolViolation, connect_request
from .channel import Channel, Message
from .engine import MediaEngine
from .errors import StartupError
from .local import start_sfu
from .to_bridge import ToBridge

log = logging.getLogger("mau.media.worker")

ADMISSION_HEADER = "X-Media-Admission"
"""What the bridge decided about a relayed connection (conference, publish right), as JSON."""
REPORT_INTERVAL_S = 1.0
CONTROL_WAIT_S = 60.0
"""A worker whose bridge never connects gives up."""
TOKENS_WAIT_S = 10.0
SHUTDOWN_TIMEOUT_S = 2.0
"""How long connections still open get to end once the worker stops."""


@dataclass(frozen=True)
class WorkerSpec:
    index: int
    socket_path: str
    settings: MediaSettings
    empty_grace_s: float
    resume_grace_s: float
    drain_grace_s: float
    logging: dict[str, Any]


class MediaWorker:
    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.bridge = ToBridge()
        self.engine = MediaEngine(
            spec.settings,
            self.bridge.presence,
            self.bridge.may_publish,
            spec.empty_grace_s,
            spec.resume_grace_s,
        )
        self.engine.conferences.on_closed = self.bridge.closed
        self.channel: Channel | None = None
        self.startup_error: str | None = None
        self.draining = False
        self._tokens_ready = asyncio.Event()
        self._done = asyncio.Event()

    async def run(self) -> int:
        app = web.Application()
        app.router.add_get("/control", self._control)
        for path, single_pc in (("/rtc", False), ("/rtc/v1", True)):
            app.router.add_get(path, partial(self._signalling, single_pc=single_pc))
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
        await runner.setup()
        await web.UnixSite(runner, self.spec.socket_path).start()
        try:
            await start_sfu(self.engine)
        except StartupError as e:
            self.startup_error = str(e)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._drain)
        loop.add_signal_handler(signal.SIGINT, lambda: None)  # the bridge decides
        try:
            async with asyncio.timeout(CONTROL_WAIT_S):
                while self.channel is None:
                    await asyncio.sleep(0.05)
        except TimeoutError:
            log.error("Media worker %d: the bridge never connected", self.spec.index)
            self._done.set()
        await self._done.wait()
        await self.engine.stop()
        if self.channel is not None:
            await self.channel.close()
        await runner.cleanup()
        return 13 if self.startup_error else 0

    # ------------------------------------------------------------------ control

    async def _control(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        if self.channel is not None:
            await ws.close()
            return ws
        channel = Channel(ws, self._on_request, self._on_notice)
        self.channel = self.bridge.channel = channel
        if self.startup_error is not None:
            channel.notify("failed", error=self.startup_error)
        else:
            channel.notify("ready", pid=os.getpid())
        reports = asyncio.create_task(self._report_forever(channel))
        try:
            await channel.run()
        finally:
            reports.cancel()
            self._done.set()  # the bridge stopped or died: so does its worker
        return ws

    async def _on_request(self, message: Message) -> Any:
        op = message["op"]
        if op == "command":
            return await self.engine.command(
                message["conference"], message["name"], message["args"]
            )
        if op == "end_sessions":
            await self.engine.livekit.stop()
            return None
        if op == "stop":
            self._done.set()
            return None
        raise ValueError(f"unknown request {op}")

    def _on_notice(self, message: Message) -> None:
        if message["op"] == "tokens":
            self.engine.livekit.tokens = FocusTokens(
                bytes.fromhex(message["key"]), int(message["lifetime"])
            )
            self._tokens_ready.set()

    async def _report_forever(self, channel: Channel) -> None:
        while True:
            channel.notify(
                "figures", figures=self.engine.figures().to_wire(), draining=self.draining
            )
            await asyncio.sleep(REPORT_INTERVAL_S)

    # ------------------------------------------------------------------ signalling

    async def _signalling(self, request: web.Request, single_pc: bool) -> web.StreamResponse:
        """A client connection the bridge admitted and relays here."""
        try:
            async with asyncio.timeout(TOKENS_WAIT_S):
                await self._tokens_ready.wait()
            decided = json.loads(request.headers[ADMISSION_HEADER])
            connect = connect_request(request, single_pc=single_pc)
            tokens = self.engine.livekit.tokens
            assert tokens is not None
            grant = tokens.verify(connect.token)
        except (TimeoutError, KeyError, ValueError, ProtocolViolation, InvalidFocusToken) as e:
            raise web.HTTPBadRequest(text=f"not a connection the bridge admitted: {e}") from e
        admission = Admission.of(
            connect, grant, str(decided["conference_id"]), bool(decided["can_publish"])
        )
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES)
        await ws.prepare(request)
        await self.engine.livekit.run(ws, admission)
        return ws

    # ------------------------------------------------------------------ draining

    def _drain(self) -> None:
        if self.draining:
            return
        self.draining = True
        log.info(
            "Media worker %d draining: no new conferences, %.0f s for those it has",
            self.spec.index,
            self.spec.drain_grace_s,
        )
        if self.channel is not None:
            self.channel.notify("draining")
        asyncio.get_running_loop().create_task(self._finish_drain())

    async def _finish_drain(self) -> None:
        deadline = time.monotonic() + self.spec.drain_grace_s
        while self.engine.sfu.conferences and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        await self.engine.livekit.stop()
        self._done.set()


def main() -> None:
    spec: WorkerSpec = pickle.loads(sys.stdin.buffer.read())
    logging.config.dictConfig(spec.logging)
    sys.exit(asyncio.run(MediaWorker(spec).run()))


if __name__ == "__main__":
    main()
