"""TURN credentials in coturn's shared-secret mode (``use-auth-secret``), as Synapse mints them.

The TURN server and the bridge share one secret; nobody stores per-user passwords. A username
is ``"<expiry unix time>:<user>"`` and its password base64(HMAC-SHA1(secret, username)), so the
TURN server checks both the signature and that the credentials have not expired (coturn's
"TURN REST API" scheme). Clients get credentials of their own that run out; a leaked pair is
useless after ``ttl``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import base64
import hashlib
import hmac

from .config import IceServer


@dataclass(frozen=True)
class TurnSecret:
    """TURN servers sharing ``shared_secret`` with the bridge (coturn: ``static-auth-secret``)."""

    urls: tuple[str, ...]
    shared_secret: str = field(repr=False)
    ttl: int = 86400
    """Seconds credentials stay valid (Synapse's ``turn_user_lifetime``). coturn may end a
    relay once its credentials expire, so this bounds how long a connection keeps one."""

    def __post_init__(self) -> None:
        if not self.urls or not all(url.startswith(("turn:", "turns:")) for url in self.urls):
            raise ValueError("TURN URLs must start with turn: or turns:")
        if not self.shared_secret:
            raise ValueError("the shared secret must not be empty")
        if self.ttl < 1:
            raise ValueError("the credential lifetime must be positive")

    def ice_server(self, user: str, now: float) -> IceServer:
        """Credentials for ``user`` valid from ``now`` (unix time) for :attr:`ttl` seconds."""
        username = f"{int(now) + self.ttl}:{user}"
        digest = hmac.new(self.shared_secret.encode(), username.encode(), hashlib.sha1).digest()
        return IceServer(self.urls, username, base64.b64encode(digest).decode())
