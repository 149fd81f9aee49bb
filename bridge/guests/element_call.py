"""Element Call's web app (its built ``dist`` directory) served by aiohttp in standalone
mode with a ``config.json`` of ours: every path is the app (it routes in the URL's fragment),
its assets come from ``dist/assets``, and any path ending in ``config.json`` is the config.

The bridge serves it to guests; the demo and the tests serve the same to their users."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
import json

from aiohttp import web

PACKAGE_DIST = (
    Path(__file__).resolve().parents[2]
    / "web"
    / "node_modules"
    / "@element-hq"
    / "element-call-embedded"
    / "dist"
)
"""The npm package pinned in ``web/package-lock.json``, in a checkout after ``npm ci``."""

AUTH_STORE_KEY = "matrix-auth-store"
"""Where Element Call keeps its session in ``localStorage`` (``user_id``, ``device_id``,
``access_token``, ``passwordlessUser``), read when it starts (``src/ClientContext.tsx``)."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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


def is_element_call(dist: Path) -> bool:
    return (dist / "index.html").is_file()


def element_call_handler(dist: Path, config: dict[str, object]) -> Handler:
    """A handler serving the app in ``dist`` on the routes it is added to. Element Call at
    a path ending in ``/room/`` asks for ``/config.json`` at the root of its origin: add that
    route too."""
    text = json.dumps(config)
    dist = dist.resolve()

    async def respond(request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.endswith("/config.json"):
            return web.Response(text=text, content_type="application/json")
        _, found, asset = path.partition("assets/")
        if found:
            file = (dist / "assets" / asset).resolve()
            if file.is_relative_to(dist) and file.is_file():
                return web.FileResponse(file)
            raise web.HTTPNotFound()
        return web.FileResponse(dist / "index.html")

    return respond
