"""The real Element Call web app (npm ``@element-hq/element-call-embedded``, pinned in
``web/package-lock.json``) served on loopback in standalone mode, configured for a given
homeserver and focus: every path under ``/room`` is the app, its assets are served from the
package, and ``config.json`` is ours."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
import json

from aiohttp import web

from .loopback_http import serve
from .web import WEB_ROOT

DIST = WEB_ROOT / "node_modules" / "@element-hq" / "element-call-embedded" / "dist"


def element_call_config(
    homeserver_url: str, server_name: str, focus_url: str
) -> dict[str, object]:
    """Element Call's ``config.json``: the homeserver, and the focus as a last resort (it
    asks the homeserver's ``/rtc/transports`` first). No analytics, no rageshakes."""
    return {
        "default_server_config": {
            "m.homeserver": {"base_url": homeserver_url, "server_name": server_name}
        },
        "livekit": {"livekit_service_url": focus_url},
        "matrix_rtc_session": {"wait_for_key_rotation_ms": 5000},
    }


@asynccontextmanager
async def element_call(
    homeserver_url: str, server_name: str, focus_url: str
) -> AsyncIterator[str]:
    """Serve Element Call on loopback; yields its base URL."""
    if not (DIST / "index.html").is_file():
        raise RuntimeError("Element Call is missing: run `npm ci` in web/")
    config = json.dumps(element_call_config(homeserver_url, server_name, focus_url))

    async def respond(request: web.Request) -> web.StreamResponse:
        path = request.match_info["path"]
        if path.endswith("config.json"):
            return web.Response(text=config, content_type="application/json")
        _, found, asset = path.partition("assets/")
        if found:
            file = (DIST / "assets" / asset).resolve()
            if file.is_relative_to(DIST) and file.is_file():
                return web.FileResponse(file)
            raise web.HTTPNotFound()
        return web.FileResponse(DIST / "index.html")

    app = web.Application()
    app.router.add_get("/{path:.*}", respond)
    async with serve(app) as url:
        yield url
