"""The focus: its HTTP listener, wired to OpenID verification, room access and tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING
import asyncio
import logging

from aiohttp import web
from mautrix.types import UserID
from yarl import URL
import aiohttp

from ..db import Secret
from ..media import Roster
from ..permissions import PermissionLevel
from ..room_state import RoomStates
from .access import RoomAccess, RoomsWithoutBot
from .client_address import ClientAddresses
from .connections import ConnectionGuard
from .delayed_events import DelayedEvents
from .delegated_leave import DelegatedLeaves
from .federation_relay import FederationRelay
from .http import add_token_routes, create_app
from .openid import OpenIDVerifier
from .proxied import ProxiedRoutes
from .public_network import PublicResolver
from .rate_limit import RateLimiter
from .server_discovery import DnsSrvResolver, ServerDiscovery
from .token_api import MediaUrl, TokenService
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
        roster: Roster,
    ) -> None:
        self.config = config
        self.limits = config.focus_limits()
        self.addresses = ClientAddresses(config.trusted_proxies())
        self.connections = ConnectionGuard(self.limits, self.addresses)
        self.app = create_app(middlewares=[self.connections.middleware])
        self.access = RoomAccess(
            rooms,
            bot_mxid,
            RoomsWithoutBot(config["focus.rooms_without_bot"]),
            permissions,
            config.moderation_level(),
        )
        self.delegation = DelegatedLeaves(roster, config["focus.delegated_leave_grace"])
        self.signalling_url = signalling_url(
            config["focus.public_url"], config["focus.hostname"], config["focus.port"]
        )
        self.media_url: MediaUrl | None = None
        """Where a room's clients connect when not here (set by the bridge for media nodes)."""
        self.service: TokenService | None = None
        """Set once started, as is :attr:`relay`."""
        self.relay: FederationRelay | None = None
        self._tokens: FocusTokens | None = None
        self._sessions: list[aiohttp.ClientSession] = []
        self._runner: web.AppRunner | None = None
        self._listener: asyncio.Server | None = None

    @property
    def tokens(self) -> FocusTokens:
        if self._tokens is None:
            raise RuntimeError("the focus is not started")
        return self._tokens

    def add_proxied_routes(self, app: web.Application) -> None:
        """Serve the routes the homeserver forwards (MSC4512) on ``app``, the appservice's,
        if ``focus.homeserver_proxy`` claims them."""
        if not self.config["focus.homeserver_proxy"]:
            return
        ProxiedRoutes(
            self, self.config["appservice.hs_token"], self.config["homeserver.domain"]
        ).add_to(app)

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
        # Discovered servers only at public addresses; configured ones wherever they are.
        public = aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=PublicResolver()))
        trusted = aiohttp.ClientSession()
        self._sessions = [public, trusted]
        discovery = ServerDiscovery(public, DnsSrvResolver(), openid_servers(self.config))
        verifier = OpenIDVerifier(
            public,
            discovery,
            trusted_session=trusted,
            per_server=RateLimiter(self.limits.token_requests_per_minute_per_server),
        )
        service = TokenService(
            verifier,
            self.access,
            self._tokens,
            self.signalling_url,
            self.config["homeserver.domain"],
            self.media_url,
        )
        homeserver = URL(self.config["homeserver.address"])
        await self.delegation.start(DelayedEvents(trusted, homeserver))
        per_client = RateLimiter(self.limits.token_requests_per_minute_per_client)
        add_token_routes(self.app, service, self.addresses, per_client)
        # No access log: it would record callers' addresses, and later tokens in query strings.
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        assert self._runner.server is not None
        self._listener = await self.connections.listen(self._runner.server, hostname, port)
        self.relay = FederationRelay(trusted, homeserver, self.config["appservice.as_token"])
        self.service = service
        log.info("Focus listening on %s:%d", hostname, port)

    async def stop(self) -> None:
        self.service = None
        await self.delegation.stop()
        if self._listener is not None:
            self._listener.close()
        if self._runner is not None:
            await self._runner.cleanup()
        for session in self._sessions:
            await session.close()
