"""``GET /metrics`` on a listener of its own, for Prometheus; nothing else is served there."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
import asyncio
import contextlib
import logging
import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from ..media import MediaFigures
from .instruments import LOOP_LAG, REGISTRY, START_TIME, UP
from .media import MediaCollector

log = logging.getLogger("mau.metrics")

LAG_PROBE_INTERVAL_S = 1.0


@dataclass(frozen=True)
class MetricsSettings:
    """The ``metrics`` section of the config."""

    enabled: bool = False
    hostname: str = "127.0.0.1"
    port: int = 29336


class _Registry(Collector):
    """Another registry's metrics, inside this one."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self._registry.collect()


def loop_lag(started: float, now: float, interval: float) -> float:
    """How much later than asked a timer of ``interval`` seconds set at ``started`` fired."""
    return max(0.0, now - started - interval)


class MetricsServer:
    def __init__(self, settings: MetricsSettings, figures: Callable[[], MediaFigures]) -> None:
        self.settings = settings
        self.registry = CollectorRegistry()
        self.registry.register(_Registry(REGISTRY))
        self.registry.register(MediaCollector(figures))
        self._runner: web.AppRunner | None = None
        self._lag_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Listen; raises OSError when the address cannot be bound."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.settings.hostname, self.settings.port).start()
        UP.set(1)
        START_TIME.set(time.time())
        self._lag_task = asyncio.create_task(self._probe_loop_lag())
        log.info("Metrics on %s:%d/metrics", self.settings.hostname, self.settings.port)

    async def stop(self) -> None:
        if self._lag_task is not None:
            self._lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._lag_task
        if self._runner is not None:
            await self._runner.cleanup()

    async def _metrics(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def _probe_loop_lag(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(LAG_PROBE_INTERVAL_S)
            LOOP_LAG.set(loop_lag(started, loop.time(), LAG_PROBE_INTERVAL_S))
