"""The bridge's own instruments, in one registry: token requests by outcome, OpenID lookup
latency, database errors, and the process's health and CPU."""

from __future__ import annotations

from typing import ParamSpec, TypeVar
from collections.abc import Awaitable, Callable
import functools
import time

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.process_collector import ProcessCollector

P = ParamSpec("P")
T = TypeVar("T")

disable_created_metrics()  # no *_created series beside every counter
REGISTRY = CollectorRegistry()

UP = Gauge(
    "bridge_up",
    "1 while the bridge process runs (one process today: it serves Matrix, the focus and "
    "the media).",
    registry=REGISTRY,
)
START_TIME = Gauge(
    "bridge_start_time_seconds", "When the bridge process started (unix time).", registry=REGISTRY
)
LOOP_LAG = Gauge(
    "bridge_event_loop_lag_seconds",
    "How late the process's event loop last woke a timer: media, signalling and Matrix all "
    "wait that long (above a few milliseconds, the process is overloaded).",
    registry=REGISTRY,
)
# process_cpu_seconds_total is the forwarding CPU: the media runs in this process.
ProcessCollector(registry=REGISTRY)
TOKEN_REQUESTS = Counter(
    "bridge_token_requests",
    "Token requests (/sfu/get, /get_token) by outcome.",
    ["outcome"],
    registry=REGISTRY,
)
OPENID_LOOKUPS = Histogram(
    "bridge_openid_lookup_seconds",
    "Time to verify an OpenID token with the homeserver that issued it (server discovery "
    "included; cached tokens cost no lookup).",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
DATABASE_ERRORS = Counter(
    "bridge_database_errors",
    "Database queries that failed (constraint violations the bridge expects excluded).",
    registry=REGISTRY,
)

_OUTCOMES = {200: "issued", 401: "unauthorized", 403: "forbidden", 429: "rate_limited"}
for _outcome in (*_OUTCOMES.values(), "bad_request", "error"):
    TOKEN_REQUESTS.labels(_outcome)  # each outcome is exported from the start, at 0


def token_outcome(status: int) -> str:
    """The ``outcome`` label of a token request answered with HTTP ``status``."""
    if status in _OUTCOMES:
        return _OUTCOMES[status]
    return "bad_request" if 400 <= status < 500 else "error"


def counts_token_requests(
    answer: Callable[P, Awaitable[web.Response]],
) -> Callable[P, Awaitable[web.Response]]:
    """Count each answer of a token endpoint by its outcome."""

    @functools.wraps(answer)
    async def counted(*args: P.args, **kwargs: P.kwargs) -> web.Response:
        response = await answer(*args, **kwargs)
        TOKEN_REQUESTS.labels(token_outcome(response.status)).inc()
        return response

    return counted


def times_openid_lookups(
    lookup: Callable[P, Awaitable[T]],
) -> Callable[P, Awaitable[T]]:
    """Observe how long each OpenID lookup takes, whether it succeeds or not."""

    @functools.wraps(lookup)
    async def timed(*args: P.args, **kwargs: P.kwargs) -> T:
        started = time.monotonic()
        try:
            return await lookup(*args, **kwargs)
        finally:
            OPENID_LOOKUPS.observe(time.monotonic() - started)

    return timed
