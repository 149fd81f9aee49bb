"""Which address a request comes from, for per-client limits.

Behind a reverse proxy every connection comes from the proxy, so the client's address is
taken from ``X-Forwarded-For``, but only when the connection comes from a proxy the admin
listed in ``focus.trusted_proxies``: anyone else could write any address there.
"""

from __future__ import annotations

from collections.abc import Iterable
import ipaddress

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Addresses or CIDR networks. Raises ValueError naming the first bad one."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(str(value), strict=False))
        except ValueError as e:
            raise ValueError(f"{value!r} is not an IP address or network") from e
    return tuple(networks)


class ClientAddresses:
    def __init__(self, trusted_proxies: tuple[IPNetwork, ...] = ()) -> None:
        self.trusted_proxies = trusted_proxies

    def is_trusted_proxy(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted_proxies)

    def client_of(self, peer: str, forwarded_for: list[str]) -> str:
        """The client behind ``peer`` (the connection's address): the rightmost address of
        the ``X-Forwarded-For`` headers that is not a trusted proxy. Each proxy appends the
        address it saw, so entries left of that one are the client's own claims."""
        client = peer
        if not self.is_trusted_proxy(peer):
            return client
        hops = [hop.strip() for header in forwarded_for for hop in header.split(",")]
        for hop in reversed(hops):
            try:
                client = str(ipaddress.ip_address(hop))
            except ValueError:
                return client  # garbage: stop at the last address a trusted proxy vouched for
            if not self.is_trusted_proxy(client):
                return client
        return client
