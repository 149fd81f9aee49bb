"""Media worker processes, started and supervised by the bridge (``media.workers``).

Each worker (:mod:`bridge.media.worker`) owns whole conferences, with its own SFU on its own
UDP port (``media.udp_port + i``). A conference is placed on the least loaded worker when its
first participant arrives; its clients' signalling WebSockets reach the focus listener as
before and are relayed to that worker over its Unix socket. A worker that dies ends only its
conferences (everyone in them has left, for call history and the rest) and is started again,
so their clients can rejoin at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from collections.abc import Callable
from dataclasses import dataclass, field, replace
import asyncio
import contextlib
import json
import logging
import os
import pickle
import shutil
import sys
import tempfile

from aiohttp import (
    ClientSession,
    ClientWebSocketResponse,
    UnixConnector,
    WSCloseCode,
    WSMsgType,
    web,
)
import aiohttp

from sfu import MediaCounters, MediaSettings

from ..livekit.protocol import MAX_MESSAGE_BYTES
from .channel import Channel, ChannelClosed, Message
from .errors import StartupError
from .plane import MediaFigures, MediaPlane, add_counters
from .roster import Presence
from .select import Load, least_loaded
from .worker import ADMISSION_HEADER, WorkerSpec

if TYPE_CHECKING:
    from ..focus.tokens import FocusTokens
    from ..livekit.host import Admission

log = logging.getLogger("mau.media.host")

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0
RESTART_DELAY_S = (0.2, 10.0)
"""First and longest pause before restarting a worker that died (doubling while it keeps
dying within :data:`STABLE_S`)."""
STABLE_S = 30.0
GONE = "the media worker of this call stopped"


def worker_settings(settings: MediaSettings, index: int) -> MediaSettings:
    """Worker ``index``'s media settings: in the single-port mode its own port, the next one
    after worker ``index - 1``'s; a port range is shared (each connection takes a free one)."""
    if settings.single_port and settings.udp_port:
        return replace(settings, udp_port=settings.udp_port + index)
    return settings


@dataclass
class WorkerProcess:
    """One media worker as the bridge sees it."""

    index: int
    socket_path: str = ""
    process: asyncio.subprocess.Process | None = None
    channel: Channel | None = None
    session: ClientSession | None = None
    figures: MediaFigures = field(default_factory=MediaFigures)
    placed_since_report: int = 0
    ready: bool = False
    draining: bool = False
    conferences: set[str] = field(default_factory=set)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def load(self) -> Load:
        return Load(
            str(self.index),
            self.figures.participants,
            self.figures.conferences,
            self.placed_since_report,
            accepting=self.ready and not self.draining,
        )


class WorkerPlane(MediaPlane):
    def __init__(
        self,
        count: int,
        settings: MediaSettings,
        empty_grace_s: float,
        resume_grace_s: float,
        drain_grace_s: float,
        logging_config: dict[str, Any],
    ) -> None:
        super().__init__()
        self.settings = settings
        self._spec = WorkerSpec(
            0, "", settings, empty_grace_s, resume_grace_s, drain_grace_s, logging_config
        )
        self._directory = ""
        """Holds the workers' sockets while they run."""
        self.workers = [WorkerProcess(i) for i in range(count)]
        self._owner: dict[str, WorkerProcess] = {}
        """By conference id: the worker that carries it."""
        self.on_closed: Callable[[str], None] | None = None
        """Told each conference that closed (a media node tells the bridge)."""
        self._tokens: FocusTokens | None = None
        self._retired = MediaCounters()
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        self._directory = tempfile.mkdtemp(prefix="bridge-media-")
        for worker in self.workers:
            worker.socket_path = os.path.join(self._directory, f"worker-{worker.index}.sock")
        await asyncio.gather(*(self._launch(worker) for worker in self.workers))
        log.info("%d media workers running", len(self.workers))

    async def end_sessions(self) -> None:
        async def end(worker: WorkerProcess) -> None:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await self._request(worker, "end_sessions")

        await asyncio.gather(*(end(w) for w in self.workers if w.ready), return_exceptions=True)

    async def close(self) -> None:
        self._stopping = True
        await asyncio.gather(*(self._stop(worker) for worker in self.workers))
        for task in list(self._tasks):
            task.cancel()
        if self._directory:
            shutil.rmtree(self._directory, ignore_errors=True)

    def use_tokens(self, tokens: FocusTokens) -> None:
        self._tokens = tokens
        for worker in self.workers:
            self._send_tokens(worker)

    async def _launch(self, worker: WorkerProcess, supervise: bool = True) -> None:
        """Start a worker and connect its control channel; raises StartupError. Supervised,
        it is started again whenever it exits."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(worker.socket_path)
        spec = replace(
            self._spec,
            index=worker.index,
            socket_path=worker.socket_path,
            settings=worker_settings(self.settings, worker.index),
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge.media.worker", stdin=asyncio.subprocess.PIPE
        )
        worker.process = process
        assert process.stdin is not None
        process.stdin.write(pickle.dumps(spec))
        process.stdin.close()
        # Every participant's signalling holds one connection to its worker for the whole
        # call: no pool limit (aiohttp's default of 100 left the 101st participant of a worker
        # waiting forever); the bridge's own limits bound them.
        worker.session = ClientSession(connector=UnixConnector(worker.socket_path, limit=0))
        control = await self._connect(worker, process)
        started: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        channel = Channel(
            control,
            self._on_request,
            lambda message: self._on_notice(worker, message, started),
        )
        worker.channel = channel
        self._spawn(channel.run())
        try:
            async with asyncio.timeout(START_TIMEOUT_S):
                error = await started
        except TimeoutError:
            error = f"media worker {worker.index} did not start"
        if error is not None:
            await self._stop(worker)
            raise StartupError(error)
        worker.ready = True
        self._send_tokens(worker)
        if supervise:
            self._spawn(self._supervise(worker, process))
        log.info("Media worker %d started (pid %d)", worker.index, process.pid)

    async def _connect(
        self, worker: WorkerProcess, process: asyncio.subprocess.Process
    ) -> ClientWebSocketResponse:
        assert worker.session is not None
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
        while True:
            try:
                return await worker.session.ws_connect("http://media/control")
            except aiohttp.ClientError:
                if process.returncode is not None:
                    raise StartupError(
                        f"media worker {worker.index} exited with code {process.returncode}"
                    ) from None
                if asyncio.get_running_loop().time() > deadline:
                    process.kill()
                    raise StartupError(f"media worker {worker.index} did not start") from None
                await asyncio.sleep(0.05)

    async def _supervise(self, worker: WorkerProcess, process: asyncio.subprocess.Process) -> None:
        """Wait for the worker to exit; end its conferences and start it again."""
        delay = RESTART_DELAY_S[0]
        while True:
            started = asyncio.get_running_loop().time()
            code = await process.wait()
            self._gone(worker)
            if self._stopping:
                return
            log.warning("Media worker %d exited (code %s); starting it again", worker.index, code)
            if asyncio.get_running_loop().time() - started > STABLE_S:
                delay = RESTART_DELAY_S[0]
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESTART_DELAY_S[1])
            try:
                await self._launch(worker, supervise=False)
            except StartupError as e:
                log.error("Media worker %d could not start again: %s", worker.index, e)
                continue
            assert worker.process is not None
            process = worker.process

    def _gone(self, worker: WorkerProcess) -> None:
        """The worker's conferences ended with it: everyone in them left."""
        worker.ready = False
        worker.draining = False
        for conference_id in list(worker.conferences):
            if self._owner.get(conference_id) is worker:
                del self._owner[conference_id]
            self.roster.drop(conference_id, GONE)
        worker.conferences.clear()
        add_counters(self._retired, worker.figures.counters)
        worker.figures = MediaFigures()
        worker.placed_since_report = 0
        if worker.session is not None:
            self._spawn(worker.session.close())
            worker.session = None

    async def _stop(self, worker: WorkerProcess) -> None:
        process = worker.process
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ChannelClosed, TimeoutError, RuntimeError):
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await self._request(worker, "stop")
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        if worker.session is not None:
            await worker.session.close()
            worker.session = None

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ channel

    async def _request(self, worker: WorkerProcess, op: str, **fields: Any) -> Any:
        if worker.channel is None:
            raise ChannelClosed(f"media worker {worker.index} is not running")
        return await worker.channel.request(op, **fields)

    def _send_tokens(self, worker: WorkerProcess) -> None:
        if self._tokens is not None and worker.channel is not None:
            worker.channel.notify(
                "tokens", key=self._tokens.key_hex(), lifetime=self._tokens.lifetime_s
            )

    async def _on_request(self, message: Message) -> Any:
        if message["op"] == "may_publish":
            return await self.may_publish(message["room_id"], message["user_id"])
        raise ValueError(f"unknown request {message['op']}")

    def _on_notice(
        self, worker: WorkerProcess, message: Message, started: asyncio.Future[str | None]
    ) -> None:
        op = message["op"]
        if op in ("ready", "failed"):
            if not started.done():
                started.set_result(message.get("error"))
        elif op == "presence":
            presence = Presence.from_wire(message["presence"])
            self._owner.setdefault(presence.conference_id, worker)
            worker.conferences.add(presence.conference_id)
            self.roster.apply(presence)
        elif op == "closed":
            conference_id = message["conference_id"]
            worker.conferences.discard(conference_id)
            if self._owner.get(conference_id) is worker:
                del self._owner[conference_id]
            if self.on_closed is not None:
                self.on_closed(conference_id)
        elif op == "figures":
            worker.figures = MediaFigures.from_wire(message["figures"])
            worker.placed_since_report = 0
            worker.draining = bool(message["draining"])
        elif op == "draining":
            worker.draining = True
            log.info("Media worker %d is draining", worker.index)

    # ------------------------------------------------------------------ placement

    def _place(self, conference_id: str) -> WorkerProcess | None:
        """The worker of the conference, placed now on the least loaded one if new."""
        worker = self._owner.get(conference_id)
        if worker is not None and worker.ready:
            return worker
        chosen = least_loaded([w.load() for w in self.workers])
        if chosen is None:
            return None
        worker = self.workers[int(chosen)]
        worker.placed_since_report += 1
        worker.conferences.add(conference_id)
        self._owner[conference_id] = worker
        log.info("Conference %s placed on media worker %d", conference_id, worker.index)
        return worker

    def worker_of(self, conference_id: str) -> WorkerProcess | None:
        return self._owner.get(conference_id)

    # ------------------------------------------------------------------ the plane

    def figures(self) -> MediaFigures:
        totals = MediaFigures()
        add_counters(totals.counters, self._retired)
        for worker in self.workers:
            totals.add(worker.figures)
        return totals

    def accepts_newcomers(self, conference_id: str) -> bool:
        worker = self._owner.get(conference_id)
        candidates = [worker] if worker is not None else self.workers
        return any(
            w.ready and w.figures.connecting < self.settings.max_connecting_transports
            for w in candidates
        )

    async def serve_signalling(
        self, request: web.Request, admission: Admission
    ) -> web.StreamResponse:
        worker = self._place(admission.conference_id)
        if worker is None or worker.session is None:
            raise web.HTTPServiceUnavailable(text="No media worker is available; try again.")
        decided = {"conference_id": admission.conference_id, "can_publish": admission.can_publish}
        try:
            upstream = await worker.session.ws_connect(
                f"http://media{request.path_qs}",
                headers={ADMISSION_HEADER: json.dumps(decided)},
                max_msg_size=MAX_MESSAGE_BYTES,
                autoping=True,
            )
        except aiohttp.ClientError as e:
            raise web.HTTPServiceUnavailable(text="The media worker is not reachable.") from e
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES)
        await ws.prepare(request)
        await relay(ws, upstream)
        return ws

    async def command(self, conference_id: str, name: str, **args: Any) -> Any:
        worker = (
            self._place(conference_id) if name == "leg_open" else self._owner.get(conference_id)
        )
        if worker is None:
            return None  # no media carries this conference: nothing to act on
        return await self._request(
            worker, "command", conference=conference_id, name=name, args=args
        )


async def relay(client: web.WebSocketResponse, upstream: ClientWebSocketResponse) -> None:
    """Pass messages both ways until one side closes; then close the other the same way
    (the code and reason the worker closed with reach the client)."""

    async def to_upstream() -> None:
        while (message := await client.receive()).type in (WSMsgType.BINARY, WSMsgType.TEXT):
            await _send(upstream, message)
        await upstream.close(code=client.close_code or WSCloseCode.GOING_AWAY)

    forward = asyncio.create_task(to_upstream())
    try:
        while (message := await upstream.receive()).type in (WSMsgType.BINARY, WSMsgType.TEXT):
            await _send(client, message)
    finally:
        forward.cancel()
        await asyncio.gather(forward, return_exceptions=True)
    if message.type == WSMsgType.CLOSE:
        await client.close(code=message.data, message=(message.extra or "").encode())
    else:
        await client.close(code=upstream.close_code or WSCloseCode.GOING_AWAY)
    await upstream.close()


async def _send(
    sink: web.WebSocketResponse | ClientWebSocketResponse, message: aiohttp.WSMessage
) -> None:
    """Pass one message on; a sink that went away ends its direction by itself."""
    with contextlib.suppress(ConnectionError, RuntimeError):
        if message.type == WSMsgType.BINARY:
            await sink.send_bytes(message.data)
        else:
            await sink.send_str(message.data)
