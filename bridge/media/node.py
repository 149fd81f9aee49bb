"""A media node: a machine that runs only media workers for a bridge elsewhere
(``python -m bridge.media.node -c node.yaml``; the config file has the bridge's layout, of
which the node reads ``node``, ``media``, ``redis``, ``logging``, ``bridge.call_end_grace``
and ``focus.resume_grace``).

It reports itself and its load to Redis every 2 s, serves its clients' signalling on
``node.hostname``/``node.port`` (the bridge's tokens send them to ``node.public_url``) after
asking the bridge whether each may connect, and relays them to its workers. SIGTERM drains it:
it takes no new conferences and stops once its calls are over, or ``media.drain_grace`` later.
"""

from __future__ import annotations

from typing import Any
from functools import partial
import argparse
import asyncio
import contextlib
import logging
import logging.config
import signal
import sys
import time

from aiohttp import web
import redis.asyncio as redis

from sfu import ParticipantState

from ..config import Config
from ..focus.tokens import FocusTokens, InvalidFocusToken
from ..livekit.host import Admission
from ..livekit.protocol import ProtocolViolation, connect_request
from .channel import Channel, ChannelClosed, Message
from .cluster import REPORT_INTERVAL_S, Cluster, NodeReport
from .errors import StartupError
from .host import WorkerPlane
from .redis_link import RedisLink
from .roster import Presence
from .to_bridge import ToBridge

log = logging.getLogger("mau.media.node")

ADMIT_TIMEOUT_S = 10.0
REFUSALS: dict[int, type[web.HTTPException]] = {
    400: web.HTTPBadRequest,
    401: web.HTTPUnauthorized,
    403: web.HTTPForbidden,
    429: web.HTTPTooManyRequests,
}
"""The bridge's refusal of a client, as the node answers it."""


class MediaNode:
    def __init__(self, config: Config) -> None:
        self.config = config
        settings = config.node_settings()
        self.node_id = settings.node_id
        self.public_url = settings.public_url
        self.listener = (settings.hostname, settings.port)
        self.drain_grace_s = config.drain_grace()
        self.workers = WorkerPlane(
            config.media_workers() or 1,
            config.media_settings(),
            config["bridge.call_end_grace"],
            config["focus.resume_grace"],
            self.drain_grace_s,
            config.logging_config(),
        )
        self.bridge = ToBridge()
        self.workers.publish_check = self.bridge.may_publish
        self.workers.roster.listen(self.bridge.presence)
        self.workers.on_closed = self.bridge.closed
        shared = config.redis_settings()
        if shared is None:
            raise ValueError("redis.url: a media node needs the bridge's Redis")
        self.cluster = Cluster(redis.from_url(shared.url), shared.prefix)
        self.channel: Channel | None = None
        self.tokens: FocusTokens | None = None
        self.draining = False
        self._sequence = 0
        self._done = asyncio.Event()

    async def run(self) -> None:
        try:
            await self.cluster.client.ping()
        except (redis.RedisError, OSError) as e:
            raise StartupError(f"redis.url: cannot connect to Redis: {e}") from e
        await self.workers.start()
        link = RedisLink(
            self.cluster.client,
            self.cluster.key("to", self.node_id),
            self.cluster.key("from", self.node_id),
        )
        await link.open()
        self.channel = self.bridge.channel = Channel(link, self._on_request, self._on_notice)
        channel_task = asyncio.create_task(self.channel.run())
        self.channel.notify("hello")
        app = web.Application()
        for path, single_pc in (("/rtc", False), ("/rtc/v1", True)):
            app.router.add_get(path, partial(self._connect, single_pc=single_pc))
            app.router.add_get(f"{path}/validate", partial(self._validate, single_pc=single_pc))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        host, port = self.listener
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as e:
            raise StartupError(f"node.port: cannot listen on {host}:{port}: {e.strerror}") from e
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._drain)
        loop.add_signal_handler(signal.SIGINT, self._done.set)
        reporter = asyncio.create_task(self._report_forever())
        log.info("Media node %s serving on %s:%d", self.node_id, host, port)
        await self._done.wait()
        reporter.cancel()
        with contextlib.suppress(redis.RedisError, OSError):
            await self.cluster.withdraw(self.node_id)
        await self.workers.end_sessions()
        await runner.cleanup()
        await self.workers.close()
        await self.channel.close()
        channel_task.cancel()
        await self.cluster.client.aclose()

    # ------------------------------------------------------------------ Redis

    async def _report_forever(self) -> None:
        while True:
            figures = self.workers.figures()
            self._sequence += 1
            report = NodeReport(
                self.node_id,
                self.public_url,
                figures.participants,
                figures.conferences,
                len(self.workers.workers),
                not self.draining,
                figures.to_wire(),
                self._sequence,
            )
            try:
                await self.cluster.report(report)
            except (redis.RedisError, OSError) as e:
                log.warning("Cannot report to Redis: %s", e)
            await asyncio.sleep(REPORT_INTERVAL_S)

    async def _on_request(self, message: Message) -> Any:
        op = message["op"]
        if op == "command":
            return await self.workers.command(
                message["conference"], message["name"], **message["args"]
            )
        if op == "end_sessions":
            await self.workers.end_sessions()
            return None
        raise ValueError(f"unknown request {op}")

    def _on_notice(self, message: Message) -> None:
        if message["op"] == "tokens":
            self.tokens = FocusTokens(bytes.fromhex(message["key"]), int(message["lifetime"]))
            self.workers.use_tokens(self.tokens)
        elif message["op"] == "hello" and self.channel is not None:
            # The bridge (re)started: it sends the tokens, and learns who is here.
            self.channel.notify("hello")
            for conference_id, participant_id, profile in self.workers.roster.members():
                self.bridge.presence(
                    Presence(conference_id, participant_id, ParticipantState.JOINED, profile)
                )

    # ------------------------------------------------------------------ clients

    async def _admit(self, request: web.Request, single_pc: bool) -> Admission:
        """The bridge decides (room membership, bans, limits); the node checks the token."""
        if self.draining:
            raise web.HTTPServiceUnavailable(text="This media node is stopping; join again.")
        if self.tokens is None or self.channel is None:
            raise web.HTTPServiceUnavailable(text="This media node is starting; try again.")
        try:
            connect = connect_request(request, single_pc=single_pc)
            grant = self.tokens.verify(connect.token)
        except ProtocolViolation as e:
            raise web.HTTPBadRequest(text=str(e)) from e
        except InvalidFocusToken as e:
            raise web.HTTPUnauthorized(text=str(e)) from e
        try:
            async with asyncio.timeout(ADMIT_TIMEOUT_S):
                decided = await self.channel.request("admit", token=connect.token)
        except (TimeoutError, ChannelClosed) as e:
            raise web.HTTPServiceUnavailable(text="The bridge does not answer.") from e
        if "status" in decided:
            refusal = REFUSALS.get(decided["status"], web.HTTPServiceUnavailable)
            raise refusal(text=decided["text"])
        return Admission.of(connect, grant, decided["conference_id"], decided["can_publish"])

    async def _validate(self, request: web.Request, single_pc: bool) -> web.Response:
        await self._admit(request, single_pc)
        return web.Response(text="success")

    async def _connect(self, request: web.Request, single_pc: bool) -> web.StreamResponse:
        admission = await self._admit(request, single_pc)
        return await self.workers.serve_signalling(request, admission)

    # ------------------------------------------------------------------ draining

    def _drain(self) -> None:
        if self.draining:
            return
        self.draining = True
        log.info("Media node %s draining for up to %.0f s", self.node_id, self.drain_grace_s)
        asyncio.get_running_loop().create_task(self._finish_drain())

    async def _finish_drain(self) -> None:
        deadline = time.monotonic() + self.drain_grace_s
        while self.workers.figures().conferences and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        self._done.set()


def main() -> None:
    parser = argparse.ArgumentParser(description="A media node of a Matrix conference bridge")
    parser.add_argument("-c", "--config", required=True, help="the node's config file")
    args = parser.parse_args()
    config = Config(args.config)
    config.load()
    config.update()  # keys a new release added appear, with their comments
    logging.config.dictConfig(config.logging_config())
    try:
        asyncio.run(MediaNode(config).run())
    except (StartupError, ValueError) as e:
        print(f"Cannot start the media node: {e}", file=sys.stderr)
        sys.exit(13)


if __name__ == "__main__":
    main()
