"""Finding a Matrix server's federation endpoint from its server name (server-server API,
"Resolving server names"): IP literals and explicit ports are used as they are, otherwise
``/.well-known/matrix/server`` delegation, then SRV ``_matrix-fed._tcp`` and the deprecated
``_matrix._tcp``, then port 8448.

The HTTP session and the SRV resolver are passed in, so that private deployments (and tests)
can route names without public DNS.
"""

from __future__ import annotations

from typing import Protocol
from dataclasses import dataclass
import asyncio
import ipaddress
import json
import logging
import random
import re

from yarl import URL
import aiohttp
import dns.asyncresolver
import dns.exception
import dns.name
import dns.resolver

from .public_network import is_private_host
from .ttl_cache import TTLCache

log = logging.getLogger("mau.focus.discovery")

DEFAULT_PORT = 8448
WELL_KNOWN_PATH = "/.well-known/matrix/server"
WELL_KNOWN_MAX_BYTES = 64 * 1024
WELL_KNOWN_TIMEOUT_S = 10.0
"""For the whole lookup, redirects included."""
WELL_KNOWN_MAX_REDIRECTS = 3
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# The spec's defaults: a delegation is cached for a day unless the server says otherwise,
# a failed lookup for up to an hour. We do not read Cache-Control; an hour bounds both.
FOUND_TTL_S = 3600.0
NOT_FOUND_TTL_S = 600.0
CACHE_ENTRIES = 10_000

_DNS_NAME = re.compile(r"^[A-Za-z0-9.\-]{1,255}$")
_PORT = re.compile(r"^[0-9]{1,5}$")


@dataclass(frozen=True)
class ServerName:
    """A parsed server name: a DNS name or IP literal (IPv6 without brackets), maybe a port."""

    host: str
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> ServerName:
        """Raises ValueError unless ``text`` follows the spec's server name grammar."""
        if text.startswith("["):
            host, bracket, rest = text[1:].partition("]")
            if not bracket:
                raise ValueError(f"{text!r}: unclosed IPv6 literal")
            if "%" in host:
                raise ValueError(f"{text!r}: zone identifiers are not allowed")
            ipaddress.IPv6Address(host)
        else:
            host, colon, port_text = text.partition(":")
            rest = colon + port_text
            if not _DNS_NAME.match(host):
                raise ValueError(f"{text!r} is not a server name")
        port = None
        if rest:
            if not rest.startswith(":") or not _PORT.match(rest[1:]):
                raise ValueError(f"{text!r}: bad port")
            port = int(rest[1:])
            if not 0 < port < 65536:
                raise ValueError(f"{text!r}: port out of range")
        return cls(host, port)

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"


@dataclass(frozen=True)
class ServerLocation:
    """Where to send a federation request, and which name the server must answer to."""

    base_url: URL
    host_header: str | None = None
    """The Host header; None means the one the URL implies."""
    tls_server_name: str | None = None
    """The name for SNI and certificate checks when it is not the URL's host (SRV targets)."""
    trusted: bool = False
    """Configured by the admin, so it may be on a private network."""


class SrvResolver(Protocol):
    async def lookup_srv(self, name: str) -> list[tuple[str, int]]:
        """(target, port) pairs in the order to try them; empty if there are none."""
        ...


@dataclass(frozen=True)
class SrvRecord:
    priority: int
    weight: int
    target: str
    port: int


def rfc2782_order(records: list[SrvRecord], rng: random.Random) -> list[tuple[str, int]]:
    """Lowest priority first; within a priority, a random order weighted by ``weight``."""
    ordered: list[tuple[str, int]] = []
    for priority in sorted({record.priority for record in records}):
        group = [record for record in records if record.priority == priority]
        while group:
            pick = rng.uniform(0, sum(record.weight for record in group))
            running = 0
            chosen = group[-1]
            for record in group:
                running += record.weight
                if running >= pick:
                    chosen = record
                    break
            group.remove(chosen)
            ordered.append((chosen.target, chosen.port))
    return ordered


class DnsSrvResolver:
    """SRV lookups through the system's DNS servers (dnspython)."""

    def __init__(self) -> None:
        self._resolver = dns.asyncresolver.Resolver()
        self._rng = random.Random()

    async def lookup_srv(self, name: str) -> list[tuple[str, int]]:
        try:
            answer = await self._resolver.resolve(name, "SRV", lifetime=5.0)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers):
            return []
        except dns.exception.Timeout:
            log.warning("SRV lookup of %s timed out", name)
            return []
        # A target of "." means the service is decidedly not available there.
        records = [
            SrvRecord(rr.priority, rr.weight, rr.target.to_text(omit_final_dot=True), rr.port)
            for rr in answer
            if rr.target != dns.name.root
        ]
        return rfc2782_order(records, self._rng)


class ServerDiscovery:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        srv: SrvResolver,
        overrides: dict[str, URL] | None = None,
    ) -> None:
        self._session = session
        self._srv = srv
        self._overrides = dict(overrides or {})
        self._cache: TTLCache[str, list[ServerLocation]] = TTLCache(CACHE_ENTRIES)

    def is_configured(self, server_name: str) -> bool:
        """Whether the admin configured where ``server_name`` is (no discovery needed)."""
        return server_name in self._overrides

    async def locate(self, server_name: str) -> list[ServerLocation]:
        """Where to reach ``server_name``, best first.

        Raises:
            ValueError: ``server_name`` is not a server name.
        """
        override = self._overrides.get(server_name)
        if override is not None:
            return [ServerLocation(override, trusted=True)]
        cached = self._cache.get(server_name)
        if cached is not None:
            return cached
        locations, ttl = await self._discover(ServerName.parse(server_name))
        self._cache.put(server_name, locations, ttl)
        return locations

    async def _discover(self, name: ServerName) -> tuple[list[ServerLocation], float]:
        if name.is_ip or name.port is not None:
            return [_direct(name)], FOUND_TTL_S
        delegated = await self._well_known(name.host)
        if delegated is None:
            return await self._by_srv_or_default(name.host), NOT_FOUND_TTL_S
        if delegated.is_ip or delegated.port is not None:
            return [_direct(delegated)], FOUND_TTL_S
        return await self._by_srv_or_default(delegated.host), FOUND_TTL_S

    async def _well_known(self, hostname: str) -> ServerName | None:
        url = URL.build(scheme="https", host=hostname, path=WELL_KNOWN_PATH)
        try:
            async with asyncio.timeout(WELL_KNOWN_TIMEOUT_S):
                body = await self._fetch_following_redirects(url)
        except (aiohttp.ClientError, TimeoutError, _NoDelegation) as e:
            log.debug("No delegation for %s: %s", hostname, e)
            return None
        try:
            if len(body) > WELL_KNOWN_MAX_BYTES:
                raise ValueError("too large")
            server = json.loads(body)["m.server"]
            if not isinstance(server, str):
                raise ValueError("m.server is not a string")
            return ServerName.parse(server)
        except (ValueError, KeyError, TypeError, RecursionError) as e:
            log.debug("Ignoring the delegation of %s: %s", hostname, e)
            return None

    async def _fetch_following_redirects(self, url: URL) -> bytes:
        """The spec lets ``.well-known`` redirect. aiohttp would follow redirects to any
        address, IP literals included, which no resolver sees; so each hop is checked here:
        HTTPS only, no private IP literal (names go through the session's resolver)."""
        for _ in range(WELL_KNOWN_MAX_REDIRECTS + 1):
            async with self._session.get(url, allow_redirects=False) as response:
                if response.status in REDIRECT_STATUSES:
                    url = _redirect_target(url, response.headers.get("Location", ""))
                    continue
                if response.status != 200:
                    raise _NoDelegation(f"HTTP {response.status}")
                return await response.content.read(WELL_KNOWN_MAX_BYTES + 1)
        raise _NoDelegation(f"more than {WELL_KNOWN_MAX_REDIRECTS} redirects")

    async def _by_srv_or_default(self, hostname: str) -> list[ServerLocation]:
        for service in ("_matrix-fed._tcp", "_matrix._tcp"):
            targets = await self._srv.lookup_srv(f"{service}.{hostname}")
            if targets:
                return [
                    ServerLocation(
                        URL.build(scheme="https", host=target, port=port),
                        host_header=hostname,
                        tls_server_name=hostname,
                    )
                    for target, port in targets
                ]
        return [
            ServerLocation(
                URL.build(scheme="https", host=hostname, port=DEFAULT_PORT), host_header=hostname
            )
        ]


class _NoDelegation(Exception):
    pass


def _redirect_target(current: URL, location: str) -> URL:
    try:
        target = current.join(URL(location))
    except ValueError as e:
        raise _NoDelegation("a redirect to an invalid URL") from e
    if target.scheme != "https" or not target.host:
        raise _NoDelegation("a redirect away from HTTPS")
    if is_private_host(target.host):
        raise _NoDelegation("a redirect to a private address")
    return target


def _direct(name: ServerName) -> ServerLocation:
    """An IP literal or a name with a port: connect there, and send the name as written."""
    url = URL.build(scheme="https", host=name.host, port=name.port or DEFAULT_PORT)
    return ServerLocation(url, host_header=str(name))
