"""The real Element Call web app (npm ``@element-hq/element-call-embedded``, pinned in
``web/package-lock.json``) served on loopback in standalone mode, configured for a given
homeserver and focus (see :mod:`bridge.guests.element_call`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from bridge.guests.element_call import (
    PACKAGE_DIST,
    element_call_config,
    element_call_handler,
    is_element_call,
)

from .loopback_http import serve


@asynccontextmanager
async def element_call(
    homeserver_url: str, server_name: str, focus_url: str
) -> AsyncIterator[str]:
    """Serve Element Call on loopback; yields its base URL."""
    if not is_element_call(PACKAGE_DIST):
        raise RuntimeError("Element Call is missing: run `npm ci` in web/")
    config = element_call_config(homeserver_url, server_name, focus_url)
    app = web.Application()
    app.router.add_get("/{path:.*}", element_call_handler(PACKAGE_DIST, config))
    async with serve(app) as url:
        yield url
