"""The focus's HTTP API, compatible with lk-jwt-service: ``POST /sfu/get``, ``POST /get_token``,
``GET /healthz``, CORS for browsers, and Matrix-style errors."""

from __future__ import annotations

from typing import Any
from collections.abc import Callable
import logging
import math
import time

from aiohttp import web

from ..metrics.instruments import counts_token_requests
from .client_address import ClientAddresses
from .errors import FocusError
from .rate_limit import RateLimited, RateLimiter
from .requests import TokenRequest, parse_get_token, parse_sfu_get
from .token_api import TokenService

log = logging.getLogger("mau.focus.http")

MAX_BODY = 64 * 1024
"""Token requests are a few hundred bytes; this leaves room and bounds what a caller sends."""

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST",
    "Access-Control-Allow-Headers": (
        "Accept, Content-Type, Content-Length, Accept-Encoding, X-CSRF-Token"
    ),
}


def matrix_error(status: int, errcode: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"errcode": errcode, "error": message, **extra}, status=status)


def error_response(error: FocusError) -> web.Response:
    if isinstance(error, RateLimited):
        response = matrix_error(
            error.status, error.errcode, error.message, retry_after_ms=error.retry_after_ms
        )
        response.headers["Retry-After"] = str(math.ceil(error.retry_after_ms / 1000))
        return response
    return matrix_error(error.status, error.errcode, error.message)


async def _add_cors_headers(_request: web.Request, response: web.StreamResponse) -> None:
    """On every answer, errors included: a browser hides the status of a response without them,
    and Element Call must see the 404 of its delegation probe as a 404."""
    response.headers.update(CORS_HEADERS)


def create_app(middlewares: list[Any] | None = None) -> web.Application:
    """The focus listener's application; token routes are added by :func:`add_token_routes`,
    the signalling adds its own."""
    app = web.Application(client_max_size=MAX_BODY, middlewares=middlewares or [])
    app.on_response_prepare.append(_add_cors_headers)
    app.router.add_get("/healthz", _ok)
    return app


def add_token_routes(
    app: web.Application,
    service: TokenService,
    addresses: ClientAddresses,
    per_client: RateLimiter,
) -> None:
    """``per_client`` counts every token request of one client address (see ``addresses``),
    before any work is done for it."""
    routes = _TokenRoutes(service, addresses, per_client)
    app.router.add_post("/sfu/get", routes.sfu_get)
    app.router.add_post("/get_token", routes.get_token)
    app.router.add_post("/delegate_delayed_leave", _delegate_delayed_leave)
    for path in ("/sfu/get", "/get_token", "/delegate_delayed_leave"):
        app.router.add_route("OPTIONS", path, _ok)


async def _ok(_request: web.Request) -> web.Response:
    """``/healthz``, and CORS preflights (the headers come from ``_add_cors_headers``)."""
    return web.Response()


async def _delegate_delayed_leave(_request: web.Request) -> web.Response:
    """404: delegation is served where the homeserver vouches for the caller (the forwarded
    ``…/rtc/livekit/delegate_delayed_leave``, see :mod:`.proxied`). Element Call takes any
    other answer to its probe here as support and stops restarting its delayed leave event
    itself, so this must stay 404 while delegation is not served here."""
    return matrix_error(
        404,
        "M_UNRECOGNIZED",
        "This focus takes over delayed leave events only through the homeserver.",
    )


class _TokenRoutes:
    def __init__(
        self, service: TokenService, addresses: ClientAddresses, per_client: RateLimiter
    ) -> None:
        self.service = service
        self.addresses = addresses
        self.per_client = per_client

    async def sfu_get(self, request: web.Request) -> web.Response:
        return await self._answer(request, parse_sfu_get)

    async def get_token(self, request: web.Request) -> web.Response:
        return await self._answer(request, parse_get_token)

    @counts_token_requests
    async def _answer(
        self, request: web.Request, parse: Callable[[bytes], TokenRequest]
    ) -> web.Response:
        try:
            self._count(request)
            body = await request.read()
            return web.json_response(await self.service.answer(parse(body)))
        except web.HTTPRequestEntityTooLarge:
            return matrix_error(413, "M_TOO_LARGE", f"The body is over {MAX_BODY} bytes.")
        except FocusError as e:
            log.debug("Refused a token request to %s: %s", request.path, e.message)
            return error_response(e)
        except Exception:
            log.exception("Token request to %s failed", request.path)
            return matrix_error(500, "M_UNKNOWN", "The focus failed to answer; try again.")

    def _count(self, request: web.Request) -> None:
        client = self.addresses.client_of(
            request.remote or "", request.headers.getall("X-Forwarded-For", [])
        )
        wait = self.per_client.check(client, time.monotonic())
        if wait:
            raise RateLimited("Too many token requests from this client; try again later.", wait)
