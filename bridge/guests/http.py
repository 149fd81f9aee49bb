"""What the focus listener serves guests: the link's page (``/guest/<secret>``), where they
enter a name and wait in the lobby, its two JSON calls, and Element Call (``/guest/call/``)
on the same origin, so that the page can hand the ghost's session to it in
``localStorage``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from html import escape
from pathlib import Path
from string import Template
import json
import logging

from aiohttp import web

from ..focus.client_address import ClientAddresses
from ..focus.errors import BadJSON, FocusError
from ..focus.http import error_response
from .element_call import (
    AUTH_STORE_KEY,
    element_call_config,
    element_call_handler,
    is_element_call,
)

if TYPE_CHECKING:
    from .service import Guests

log = logging.getLogger("mau.guests.http")

_HERE = Path(__file__).parent
_PAGE = Template((_HERE / "page.html").read_text(encoding="utf-8"))
_JOIN = Template((_HERE / "join.html").read_text(encoding="utf-8"))
NO_CALL_CLIENT = (
    "This server has no call client for guests installed. Tell its administrator "
    "(bridge.guests.element_call_dir)."
)
HEADERS = {
    # The page's URL holds the link's secret: no referrer to anyone, no caching.
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def page(title: str, body_html: str, status: int = 200) -> web.Response:
    return web.Response(
        text=_PAGE.substitute(title=escape(title), body=body_html),
        content_type="text/html",
        status=status,
        headers=HEADERS,
    )


def error_page(error: FocusError) -> web.Response:
    return page("Cannot join", f'<p class="error">{escape(error.message)}</p>', error.status)


class GuestRoutes:
    def __init__(
        self, guests: Guests, addresses: ClientAddresses, homeserver_url: str, server_name: str
    ) -> None:
        self.guests = guests
        self.addresses = addresses
        self.homeserver_url = homeserver_url
        self.server_name = server_name

    def add_to(self, app: web.Application, focus_url: str) -> None:
        dist = self.guests.settings.element_call_dir
        if is_element_call(dist):
            config = element_call_config(self.homeserver_url, self.server_name, focus_url)
            handler = element_call_handler(dist, config)
            app.router.add_get("/guest/call/{path:.*}", handler)
            app.router.add_get("/config.json", handler)
        else:
            log.warning(
                "No Element Call in %s (bridge.guests.element_call_dir): guest links cannot "
                "be used",
                dist,
            )
            app.router.add_get("/guest/call/{path:.*}", self._no_call_client)
        app.router.add_post("/guest/session", self._session)
        app.router.add_get("/guest/{secret}", self._page)
        app.router.add_post("/guest/{secret}/join", self._join)

    async def _no_call_client(self, _request: web.Request) -> web.Response:
        return page("Cannot join", f'<p class="error">{escape(NO_CALL_CLIENT)}</p>', 503)

    async def _page(self, request: web.Request) -> web.Response:
        try:
            await self.guests.usable_link(request.match_info["secret"])
        except FocusError as e:
            return error_page(e)
        if not is_element_call(self.guests.settings.element_call_dir):
            return await self._no_call_client(request)
        body = _JOIN.substitute(auth_store_key=json.dumps(AUTH_STORE_KEY))
        return page("Join the call", body)

    async def _join(self, request: web.Request) -> web.Response:
        client = self.addresses.client_of(
            request.remote or "", request.headers.getall("X-Forwarded-For", [])
        )
        try:
            name = (await _json_body(request)).get("name")
            session, state = await self.guests.arrive(
                request.match_info["secret"], name if isinstance(name, str) else "", client
            )
        except FocusError as e:
            return error_response(e)
        return web.json_response({"session": session, "state": state}, headers=HEADERS)

    async def _session(self, request: web.Request) -> web.Response:
        try:
            session = (await _json_body(request)).get("session")
            answer = await self.guests.progress(session if isinstance(session, str) else "")
        except FocusError as e:
            return error_response(e)
        return web.json_response(answer, headers=HEADERS)


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise BadJSON("Send a JSON object.")
    return body
