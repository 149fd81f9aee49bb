"""Server discovery over real HTTPS on loopback, with names and SRV records injected."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
import asyncio
import random

from aiohttp import web
from yarl import URL
import pytest

from bridge.focus.server_discovery import (
    WELL_KNOWN_MAX_REDIRECTS,
    ServerDiscovery,
    ServerLocation,
    ServerName,
    SrvRecord,
    rfc2782_order,
)

from .federation_fakes import FakeFederation, FakeSrv, federation_fake


@pytest.fixture
async def fake(tmp_path: Path) -> AsyncIterator[FakeFederation]:
    async with federation_fake(tmp_path) as fake:
        yield fake


def discovery(
    fake: FakeFederation, srv: FakeSrv | None = None, overrides: dict[str, str] | None = None
) -> ServerDiscovery:
    urls = {name: URL(url) for name, url in (overrides or {}).items()}
    return ServerDiscovery(fake.session, srv or FakeSrv(), urls)


def https(host: str, port: int) -> URL:
    return URL.build(scheme="https", host=host, port=port)


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("example.org", "example.org", None),
        ("example.org:8008", "example.org", 8008),
        ("1.2.3.4", "1.2.3.4", None),
        ("[::1]:8448", "::1", 8448),
    ],
)
def test_server_names_parse(text: str, host: str, port: int | None) -> None:
    name = ServerName.parse(text)
    assert (name.host, name.port, str(name)) == (host, port, text)


@pytest.mark.parametrize(
    "text", ["", "exa mple.org", "x:0", "x:65536", "x:", "[::1", "[fe80::1%eth0]", "a:b:c", "@u"]
)
def test_bad_server_names_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        ServerName.parse(text)


async def test_ip_literals_and_explicit_ports_skip_delegation(fake: FakeFederation) -> None:
    finder = discovery(fake)
    assert await finder.locate("127.0.0.1") == [
        ServerLocation(https("127.0.0.1", 8448), host_header="127.0.0.1")
    ]
    assert await finder.locate("[::1]:8008") == [
        ServerLocation(https("::1", 8008), host_header="[::1]:8008")
    ]
    assert await finder.locate("example.test:8009") == [
        ServerLocation(https("example.test", 8009), host_header="example.test:8009")
    ]
    assert fake.requests == []


async def test_well_known_delegation_with_port(fake: FakeFederation) -> None:
    fake.well_known["example.test"] = {"m.server": "delegated.test:9000"}
    assert await discovery(fake).locate("example.test") == [
        ServerLocation(https("delegated.test", 9000), host_header="delegated.test:9000")
    ]
    [request] = fake.requests
    assert (request.path, request.host, request.sni) == (
        "/.well-known/matrix/server",
        "example.test",
        "example.test",
    )


async def test_well_known_delegation_then_srv(fake: FakeFederation) -> None:
    """The SRV target is where to connect; the delegated name is what the server must be."""
    fake.well_known["example.test"] = {"m.server": "delegated.test"}
    srv = FakeSrv({"_matrix-fed._tcp.delegated.test": [("target.test", 8443)]})
    assert await discovery(fake, srv).locate("example.test") == [
        ServerLocation(
            https("target.test", 8443),
            host_header="delegated.test",
            tls_server_name="delegated.test",
        )
    ]


async def test_without_delegation_srv_then_deprecated_srv_then_8448(fake: FakeFederation) -> None:
    srv = FakeSrv({"_matrix._tcp.other.test": [("target.test", 8500)]})
    finder = discovery(fake, srv)
    assert await finder.locate("other.test") == [
        ServerLocation(
            https("target.test", 8500), host_header="other.test", tls_server_name="other.test"
        )
    ]
    assert srv.asked == ["_matrix-fed._tcp.other.test", "_matrix._tcp.other.test"]
    assert await finder.locate("example.test") == [
        ServerLocation(https("example.test", 8448), host_header="example.test")
    ]


@pytest.mark.parametrize(
    "answer",
    [
        web.Response(text="not json"),
        web.json_response({"m.server": "bad name!"}),
        web.json_response({"m.server": 8448}),
        web.json_response(["m.server"]),
        web.Response(body=b" " * 70_000),
    ],
)
async def test_broken_delegation_is_ignored(fake: FakeFederation, answer: web.Response) -> None:
    fake.well_known["example.test"] = answer
    assert await discovery(fake).locate("example.test") == [
        ServerLocation(https("example.test", 8448), host_header="example.test")
    ]


async def test_unreachable_well_known_falls_back(fake: FakeFederation) -> None:
    assert await discovery(fake).locate("unresolvable.test") == [
        ServerLocation(https("unresolvable.test", 8448), host_header="unresolvable.test")
    ]


async def test_results_are_cached_and_overrides_win(fake: FakeFederation) -> None:
    fake.well_known["example.test"] = {"m.server": "delegated.test:9000"}
    finder = discovery(fake, overrides={"private.test": "http://127.0.0.1:8008/base"})
    first = await finder.locate("example.test")
    assert await finder.locate("example.test") == first
    assert len(fake.requests) == 1
    assert await finder.locate("private.test") == [
        ServerLocation(URL("http://127.0.0.1:8008/base"), trusted=True)
    ]
    with pytest.raises(ValueError):
        await finder.locate("not a name")


def test_srv_records_are_ordered_by_priority_then_weight() -> None:
    records = [
        SrvRecord(priority=20, weight=0, target="backup", port=1),
        SrvRecord(priority=10, weight=0, target="never", port=2),
        SrvRecord(priority=10, weight=1000, target="mostly", port=3),
    ]
    orders = {tuple(rfc2782_order(records, random.Random(seed))) for seed in range(20)}
    assert all(order[-1] == ("backup", 1) for order in orders)
    assert (("mostly", 3), ("never", 2), ("backup", 1)) in orders


@pytest.fixture
async def bystander() -> AsyncIterator[list[int]]:
    """A service on another loopback port, standing for one on the admin's private network:
    it counts the connections it gets."""
    accepted: list[int] = []

    def connected(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        writer.close()

    server = await asyncio.start_server(connected, "127.0.0.1", 0)
    accepted.append(server.sockets[0].getsockname()[1])
    try:
        yield accepted
    finally:
        server.close()
        await server.wait_closed()


def redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location})


async def test_well_known_redirects_are_followed_to_public_names(fake: FakeFederation) -> None:
    fake.well_known["example.test"] = redirect("https://delegated.test/.well-known/matrix/server")
    fake.well_known["delegated.test"] = {"m.server": "target.test:9000"}
    assert await discovery(fake).locate("example.test") == [
        ServerLocation(https("target.test", 9000), host_header="target.test:9000")
    ]
    assert [request.host for request in fake.requests] == ["example.test", "delegated.test"]


@pytest.mark.parametrize(
    "target",
    [
        "https://127.0.0.1:{port}/.well-known/matrix/server",
        "https://[::ffff:127.0.0.1]:{port}/",
        "http://127.0.0.1:{port}/",
        "//127.0.0.1:{port}/latest/meta-data",
    ],
)
async def test_well_known_redirects_into_private_networks_are_refused(
    fake: FakeFederation, bystander: list[int], target: str
) -> None:
    """A remote server must not steer the bridge to a private address by redirecting its
    .well-known there: the address is no name, so no resolver would see it."""
    port = bystander.pop(0)
    fake.well_known["example.test"] = redirect(target.format(port=port))
    assert await discovery(fake).locate("example.test") == [
        ServerLocation(https("example.test", 8448), host_header="example.test")
    ]
    assert bystander == []


async def test_redirect_chains_are_bounded(fake: FakeFederation) -> None:
    for name in ("example.test", "delegated.test"):
        other = "delegated.test" if name == "example.test" else "example.test"
        fake.well_known[name] = lambda other=other: web.Response(
            status=307, headers={"Location": f"https://{other}/.well-known/matrix/server"}
        )
    assert await discovery(fake).locate("example.test") == [
        ServerLocation(https("example.test", 8448), host_header="example.test")
    ]
    assert len(fake.requests) == WELL_KNOWN_MAX_REDIRECTS + 1
