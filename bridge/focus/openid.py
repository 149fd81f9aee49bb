"""Who is calling: a Matrix OpenID token checked with the homeserver that issued it.

``GET /_matrix/federation/v1/openid/userinfo`` on the caller's homeserver (found by server
discovery) answers the token's user ID, which must belong to that very homeserver, or one
server could vouch for users of another. Results are cached briefly, and identical lookups
running at once share one request (Element Call fetches two tokens in parallel).

Each token not in the cache costs a request to the homeserver it names, so lookups are rate
limited per homeserver (forged tokens are all different); homeservers the admin configured
are reached through their own session, without the public-address guard and without limit.
"""

from __future__ import annotations

from dataclasses import dataclass
import asyncio
import hashlib
import json
import logging
import time

from mautrix.types import UserID
import aiohttp

from ..metrics.instruments import times_openid_lookups
from .errors import Unauthorized
from .public_network import is_private_host
from .rate_limit import RateLimited, RateLimiter
from .server_discovery import ServerDiscovery, ServerLocation
from .ttl_cache import TTLCache

log = logging.getLogger("mau.focus.openid")

USERINFO_PATH = "/_matrix/federation/v1/openid/userinfo"
USERINFO_TIMEOUT_S = 10.0
USERINFO_MAX_BYTES = 64 * 1024
VALID_TTL_S = 120.0
"""Short: a user ID answered for a token is trusted this long without asking again."""
REJECTED_TTL_S = 15.0
CACHE_ENTRIES = 10_000


@dataclass(frozen=True)
class OpenIDToken:
    access_token: str
    matrix_server_name: str
    expires_in: int | None = None

    def __repr__(self) -> str:
        return f"OpenIDToken(matrix_server_name={self.matrix_server_name!r})"

    @property
    def cache_key(self) -> str:
        """A digest, so the cache holds no usable tokens."""
        raw = f"{self.matrix_server_name}\0{self.access_token}".encode()
        return hashlib.sha256(raw).hexdigest()


class _Rejected(Exception):
    """The homeserver answered, and the answer is no (worth caching, unlike a network error)."""


@dataclass(frozen=True)
class _Verdict:
    user_id: UserID | None
    rejection: str = ""


class OpenIDVerifier:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        discovery: ServerDiscovery,
        *,
        trusted_session: aiohttp.ClientSession | None = None,
        per_server: RateLimiter | None = None,
        private_hosts_allowed: bool = False,
    ) -> None:
        """``session`` reaches discovered servers (guarded by :mod:`.public_network`),
        ``trusted_session`` (default: the same) the configured ones. ``per_server`` limits
        lookups per homeserver that is not configured. ``private_hosts_allowed`` lets
        discovered locations be private IP literals, which only a closed test network wants."""
        self._session = session
        self._trusted_session = trusted_session or session
        self._discovery = discovery
        self._per_server = per_server if per_server is not None else RateLimiter(0)
        self._private_hosts_allowed = private_hosts_allowed
        self._cache: TTLCache[str, _Verdict] = TTLCache(CACHE_ENTRIES)
        self._running: dict[str, asyncio.Task[UserID]] = {}

    async def verify(self, token: OpenIDToken) -> UserID:
        """The Matrix user the token belongs to.

        Raises:
            Unauthorized: the token is invalid, expired, forged, or its server unreachable.
            RateLimited: too many lookups at the token's homeserver lately.
        """
        key = token.cache_key
        if key in self._running:
            return await asyncio.shield(self._running[key])
        cached = self._cache.get(key)
        if cached is not None:
            if cached.user_id is None:
                raise Unauthorized(cached.rejection)
            return cached.user_id
        server = token.matrix_server_name
        if not self._discovery.is_configured(server):
            wait = self._per_server.check(server, time.monotonic())
            if wait:
                log.debug("Too many OpenID lookups at %s", server)
                raise RateLimited(
                    f"Too many token requests for users of {server}; try again later.", wait
                )
        task = asyncio.create_task(self._lookup(token))
        self._running[key] = task
        task.add_done_callback(lambda _: self._running.pop(key, None))
        return await asyncio.shield(task)

    async def _lookup(self, token: OpenIDToken) -> UserID:
        key = token.cache_key
        try:
            user_id = await self._ask(token)
        except _Rejected as e:
            self._cache.put(key, _Verdict(None, str(e)), REJECTED_TTL_S)
            raise Unauthorized(str(e)) from None
        ttl = min(VALID_TTL_S, token.expires_in) if token.expires_in else VALID_TTL_S
        self._cache.put(key, _Verdict(user_id), ttl)
        return user_id

    @times_openid_lookups
    async def _ask(self, token: OpenIDToken) -> UserID:
        server = token.matrix_server_name
        try:
            locations = await self._discovery.locate(server)
        except ValueError as e:
            raise _Rejected(f"{server!r} is not a Matrix server name.") from e
        if not self._private_hosts_allowed:
            locations = [
                location
                for location in locations
                if location.trusted or not is_private_host(location.base_url.host or "")
            ]
        failure = "no public address"
        for location in locations:
            try:
                return await self._ask_at(location, token)
            except (aiohttp.ClientError, TimeoutError) as e:
                failure = type(e).__name__
                log.debug("OpenID lookup at %s failed: %s", location.base_url, e)
        log.warning("Could not reach %s to verify an OpenID token (%s)", server, failure)
        raise Unauthorized(f"Could not reach the homeserver {server} to verify the OpenID token.")

    async def _ask_at(self, location: ServerLocation, token: OpenIDToken) -> UserID:
        base = location.base_url
        url = base.with_path(base.path.rstrip("/") + USERINFO_PATH).with_query(
            access_token=token.access_token
        )
        session = self._trusted_session if location.trusted else self._session
        async with session.get(
            url,
            headers={"Host": location.host_header} if location.host_header else None,
            server_hostname=location.tls_server_name,
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=USERINFO_TIMEOUT_S),
        ) as response:
            body = await response.content.read(USERINFO_MAX_BYTES + 1)
            status = response.status
        if status >= 500:
            raise Unauthorized(
                f"The homeserver {token.matrix_server_name} failed to verify the OpenID token."
            )
        if status != 200:
            raise _Rejected(f"The homeserver {token.matrix_server_name} rejected the token.")
        try:
            sub = json.loads(body)["sub"]
        except (ValueError, KeyError, TypeError):
            sub = None
        if not isinstance(sub, str) or not sub.startswith("@") or ":" not in sub:
            raise _Rejected(f"The homeserver {token.matrix_server_name} gave no user ID.")
        if sub.split(":", 1)[1] != token.matrix_server_name:
            raise _Rejected(
                f"The homeserver {token.matrix_server_name} vouched for {sub}, "
                "a user of another server."
            )
        return UserID(sub)
