"""Connection limits and read deadlines for the focus listener, so that slow or many clients
cannot starve it (slowloris): aiohttp waits for a request's headers as long as a client
keeps the connection open, and accepts connections until file descriptors run out.

Each connection must finish its request headers within ``header_timeout`` of opening, or of
its previous answer (an idle keep-alive connection is closed after as long), and its body
within ``body_timeout``. Connections beyond ``max_connections``, or beyond
``max_connections_per_ip`` from one address that is not a trusted proxy, are closed at once.
A request being answered (a WebSocket included) is never cut by these deadlines.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
import asyncio
import logging

from aiohttp import web

from .client_address import ClientAddresses
from .http import matrix_error
from .limits import FocusLimits

log = logging.getLogger("mau.focus.connections")

WARNING_INTERVAL_S = 60.0
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class _Connection:
    transport: asyncio.BaseTransport
    address: str
    deadline: asyncio.TimerHandle | None = None
    busy: bool = False


class ConnectionGuard:
    def __init__(self, limits: FocusLimits, addresses: ClientAddresses) -> None:
        self.limits = limits
        self.addresses = addresses
        self._connections: dict[web.RequestHandler, _Connection] = {}
        self._per_address: dict[str, int] = {}
        self._warned_at = -WARNING_INTERVAL_S

    def __len__(self) -> int:
        return len(self._connections)

    async def listen(self, server: web.Server, host: str, port: int) -> asyncio.Server:
        """Serve ``server`` (an :class:`~aiohttp.web.AppRunner`'s) on ``host:port`` under
        this guard; the caller closes the listener before cleaning up the runner."""
        loop = asyncio.get_running_loop()
        return await loop.create_server(
            lambda: _GuardedHandler(
                server,
                self,
                loop=loop,
                access_log=None,
                keepalive_timeout=self.limits.header_timeout,
            ),
            host,
            port,
        )

    def opened(self, handler: web.RequestHandler, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        refusal = self._refusal(address)
        if refusal is not None:
            self._warn(refusal)
            transport.close()
            return
        self._connections[handler] = _Connection(transport, address)
        self._per_address[address] = self._per_address.get(address, 0) + 1
        self._arm(handler, self.limits.header_timeout)

    def closed(self, handler: web.RequestHandler) -> None:
        connection = self._connections.pop(handler, None)
        if connection is None:
            return
        if connection.deadline is not None:
            connection.deadline.cancel()
        remaining = self._per_address[connection.address] - 1
        if remaining:
            self._per_address[connection.address] = remaining
        else:
            del self._per_address[connection.address]

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Marks the connection busy while a request is answered, its body read first under
        ``body_timeout``; then gives the connection ``header_timeout`` for the next one."""
        connection = self._connections.get(request.protocol)
        if connection is None:  # not from our listener (a test client, say)
            return await handler(request)
        connection.busy = True
        try:
            if request.body_exists:
                try:
                    async with asyncio.timeout(self.limits.body_timeout):
                        await request.read()
                except TimeoutError:
                    response = matrix_error(408, "M_UNKNOWN", "The request body came too slowly.")
                    response.force_close()
                    return response
                except web.HTTPRequestEntityTooLarge as e:
                    response = matrix_error(413, "M_TOO_LARGE", e.text or "The body is too large.")
                    response.force_close()
                    return response
            return await handler(request)
        finally:
            connection.busy = False
            self._arm(request.protocol, self.limits.header_timeout)

    def _refusal(self, address: str) -> str | None:
        if len(self._connections) >= self.limits.max_connections:
            return f"{self.limits.max_connections} connections (focus.limits.max_connections)"
        if self._per_address.get(
            address, 0
        ) >= self.limits.max_connections_per_ip and not self.addresses.is_trusted_proxy(address):
            return (
                f"{self.limits.max_connections_per_ip} connections from one address "
                "(focus.limits.max_connections_per_ip)"
            )
        return None

    def _warn(self, refusal: str) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._warned_at >= WARNING_INTERVAL_S:
            self._warned_at = now
            log.warning("Refusing focus connections over the limit of %s", refusal)
        else:
            log.debug("Refused a focus connection over the limit of %s", refusal)

    def _arm(self, handler: web.RequestHandler, delay: float) -> None:
        connection = self._connections.get(handler)
        if connection is None:
            return
        if connection.deadline is not None:
            connection.deadline.cancel()
        connection.deadline = asyncio.get_running_loop().call_later(delay, self._expire, handler)

    def _expire(self, handler: web.RequestHandler) -> None:
        connection = self._connections.get(handler)
        if connection is None or connection.busy:
            return
        connection.deadline = None
        log.debug("Closing a focus connection that sent no complete request in time")
        connection.transport.close()


class _GuardedHandler(web.RequestHandler):
    """aiohttp's per-connection protocol, reporting opens and closes to the guard."""

    def __init__(self, manager: web.Server, guard: ConnectionGuard, **kwargs: object) -> None:
        super().__init__(manager, **kwargs)  # type: ignore[arg-type]
        self._guard = guard

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._guard.opened(self, transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._guard.closed(self)
        super().connection_lost(exc)
