"""The focus listener's limits (``focus.limits`` in the config), with their defaults."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FocusLimits:
    token_requests_per_minute_per_client: int = 60
    """Per client address; 0 turns the limit off."""
    token_requests_per_minute_per_server: int = 120
    """OpenID lookups per claimed homeserver not configured by the admin; 0: off."""
    header_timeout: float = 10.0
    """Seconds a connection may take to send a request's headers, and may stay idle."""
    body_timeout: float = 10.0
    """Seconds a request may take to send its body."""
    max_connections: int = 1000
    max_connections_per_ip: int = 100
    """Not applied to trusted proxies, whose connections carry many clients."""
