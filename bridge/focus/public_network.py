"""Only public addresses for federation lookups.

A caller chooses the ``matrix_server_name`` its OpenID token claims, so without this the
bridge could be made to send requests into the admin's private network (server-side request
forgery). Homeservers the admin configures (``focus.openid.homeservers``, and its own) are
trusted wherever they are: they are reached through a session of their own, so that a caller
naming their host (or redirecting to it) gains nothing.
"""

from __future__ import annotations

import ipaddress
import socket

from aiohttp import ThreadedResolver
from aiohttp.abc import AbstractResolver, ResolveResult


def is_private_host(host: str) -> bool:
    """Whether ``host`` is an IP literal outside the public internet (loopback, private
    ranges, link-local, ...). DNS names are judged by :class:`PublicResolver` instead."""
    try:
        return not ipaddress.ip_address(host.strip("[]")).is_global
    except ValueError:
        return False


class PublicResolver(AbstractResolver):
    """Resolves names to their public addresses only."""

    def __init__(self) -> None:
        self._resolver = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._resolver.resolve(host, port, family)
        public = [result for result in results if not is_private_host(result["host"])]
        if not public:
            raise OSError(f"{host} has no public address")
        return public

    async def close(self) -> None:
        await self._resolver.close()
