"""The focus: its HTTP listener, wired to OpenID verification, room access and tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING
import logging

from aiohttp import web
from mautrix.types import UserID
from yarl import URL
import aiohttp

from ..db import Secret
from ..permissions import PermissionLevel
from ..room_state import RoomStates
from .access import RoomAccess, RoomsWithoutBot
from .http import add_token_routes, create_app
from .openid import OpenIDVerifier
from .public_network import PublicResolver
from .server_discovery import DnsSrvResolver, ServerDiscovery
from .token_api import TokenService
from .tokens import FocusGrant, FocusTokens

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger("mau.focus")

SECRET_NAME = "focus_token_key"


def signalling_url(public_url: str, hostname: str, port: int) -> str:
    """Where tokens send clients: the public URL with a WebSocket scheme (livekit-client
    appends ``/rtc``), or the listener itself when no public URL is set."""
    if not public_url:
        return f"ws://{hostname}:{port}"
    url = URL(public_url)
    return str(url.with_scheme("wss" if url.scheme == "https" else "ws")).rstrip("/")


def openid_servers(config: Config) -> dict[str, URL]:
    """Homeservers reached without discovery: the configured map, and our own homeserver at
    the address the bridge already uses (no hairpin through port 8448 needed)."""
    servers = {str(config["homeserver.domain"]): URL(config["homeserver.address"])}
    servers.update(
        {str(name): URL(str(url)) for name, url in config["focus.openid.homeservers"].items()}
    )
    return servers


class Focus:
    def __init__(
        self,
        config: Config,
        rooms: RoomStates,
        bot_mxid: UserID,
        permissions: dict[str, PermissionLevel],
    ) -> None:
        self.config = config
        self.app = create_app()
        self.access = RoomAccess(
            rooms, bot_mxid, RoomsWithoutBot(config["focus.rooms_without_bot"]), permissions
        )
        self._tokens: FocusTokens | None = None
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None

    @property
    def tokens(self) -> FocusTokens:
        if self._tokens is None:
            raise RuntimeError("the focus is not started")
        return self._tokens

    def verify(self, token: str) -> FocusGrant:
        """Check a token presented to the signalling (see :meth:`FocusTokens.verify`)."""
        return self.tokens.verify(token)

    async def start(self) -> None:
        hostname, port = self.config["focus.hostname"], self.config["focus.port"]
        public_url = self.config["focus.public_url"]
        if not public_url:
            log.warning(
                "focus.public_url is not set: clients are sent to ws://%s:%d, which only works "
                "on this machine",
                hostname,
                port,
            )
        secret = await Secret.get_or_create(SECRET_NAME)
        self._tokens = FocusTokens(secret.value.encode(), self.config["focus.token_lifetime"])
        servers = openid_servers(self.config)
        trusted_hosts = {url.host for url in servers.values() if url.host}
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(resolver=PublicResolver(trusted_hosts))
        )
        discovery = ServerDiscovery(self._session, DnsSrvResolver(), servers)
        service = TokenService(
            OpenIDVerifier(self._session, discovery),
            self.access,
            self._tokens,
            signalling_url(public_url, hostname, port),
        )
        add_token_routes(self.app, service)
        # No access log: it would record callers' addresses, and later tokens in query strings.
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, hostname, port).start()
        log.info("Focus listening on %s:%d", hostname, port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
