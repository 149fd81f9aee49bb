"""A WebSocket endpoint on the focus listener that names this bridge process, so the doctor can
tell that ``focus.public_url`` passes WebSocket upgrades and reaches this very focus (not an
old one, or another service behind the same proxy)."""

from __future__ import annotations

from aiohttp import web

PROBE_PATH = "/healthz/websocket"


def add_probe_route(app: web.Application, instance_id: str) -> None:
    async def probe(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"focus": instance_id})
        await ws.close()
        return ws

    app.router.add_get(PROBE_PATH, probe)
