"""OpenID verification against loopback homeservers found by discovery (the real Synapse is
in test_token_service.py): who may vouch for whom, caching, and failures."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
import asyncio

from yarl import URL
import pytest

from bridge.focus.errors import Unauthorized
from bridge.focus.openid import OpenIDToken, OpenIDVerifier
from bridge.focus.public_network import PublicResolver, is_private_host
from bridge.focus.rate_limit import RateLimited, RateLimiter
from bridge.focus.server_discovery import ServerDiscovery
from demo.ports import free_port

from .federation_fakes import FakeFederation, FakeSrv, federation_fake


@pytest.fixture
async def fake(tmp_path: Path) -> AsyncIterator[FakeFederation]:
    async with federation_fake(tmp_path) as fake:
        fake.well_known["example.test"] = {"m.server": "delegated.test"}
        fake.users["good-token"] = "@alice:example.test"
        yield fake


def verifier(fake: FakeFederation, srv: FakeSrv | None = None) -> OpenIDVerifier:
    srv = srv or FakeSrv({"_matrix-fed._tcp.delegated.test": [("target.test", 8448)]})
    # The fake federation lives on 127.0.0.1, which production refuses (see below).
    return OpenIDVerifier(
        fake.session, ServerDiscovery(fake.session, srv), private_hosts_allowed=True
    )


async def test_token_is_verified_at_the_discovered_server(fake: FakeFederation) -> None:
    user_id = await verifier(fake).verify(OpenIDToken("good-token", "example.test", 3600))
    assert user_id == "@alice:example.test"
    [request] = fake.userinfo_requests()
    # Connected to the SRV target, but speaking to (and checking the certificate of) the
    # delegated name.
    assert (request.host, request.sni) == ("delegated.test", "delegated.test")


async def test_identical_lookups_share_one_request_and_are_cached(fake: FakeFederation) -> None:
    check = verifier(fake)
    token = OpenIDToken("good-token", "example.test")
    results = await asyncio.gather(check.verify(token), check.verify(token))
    assert results == ["@alice:example.test", "@alice:example.test"]
    assert await check.verify(token) == "@alice:example.test"
    assert len(fake.userinfo_requests()) == 1


async def test_a_server_cannot_vouch_for_users_of_another(fake: FakeFederation) -> None:
    fake.users["foreign"] = "@alice:other.test"
    with pytest.raises(Unauthorized, match="a user of another server"):
        await verifier(fake).verify(OpenIDToken("foreign", "example.test"))


async def test_rejected_tokens_are_refused_and_briefly_remembered(fake: FakeFederation) -> None:
    check = verifier(fake)
    for _ in range(2):
        with pytest.raises(Unauthorized, match="rejected the token"):
            await check.verify(OpenIDToken("forged", "example.test"))
    assert len(fake.userinfo_requests()) == 1


async def test_server_errors_are_not_remembered(fake: FakeFederation) -> None:
    check = verifier(fake)
    fake.userinfo_status = 502
    with pytest.raises(Unauthorized, match="failed to verify"):
        await check.verify(OpenIDToken("good-token", "example.test"))
    fake.userinfo_status = 200
    assert await check.verify(OpenIDToken("good-token", "example.test")) == "@alice:example.test"


async def test_unreachable_servers_are_tried_in_order(fake: FakeFederation) -> None:
    srv = FakeSrv(
        {
            "_matrix-fed._tcp.delegated.test": [
                ("127.0.0.1", free_port()),
                ("target.test", 8448),
            ]
        }
    )
    assert await verifier(fake, srv).verify(OpenIDToken("good-token", "example.test")) == (
        "@alice:example.test"
    )
    lonely = FakeSrv({"_matrix-fed._tcp.delegated.test": [("127.0.0.1", free_port())]})
    with pytest.raises(Unauthorized, match="Could not reach"):
        await verifier(fake, lonely).verify(OpenIDToken("good-token", "example.test"))


async def test_the_token_never_appears_in_its_repr() -> None:
    assert "secret-token" not in repr(OpenIDToken("secret-token", "example.test"))


async def test_private_addresses_are_never_contacted(fake: FakeFederation) -> None:
    """A caller picks the server name its token claims: it must not steer the bridge into
    the private network (SSRF). The fake server listens on 127.0.0.1, so any attempt shows."""
    srv = FakeSrv({"_matrix-fed._tcp.delegated.test": [("127.0.0.1", fake.port)]})
    guarded = OpenIDVerifier(fake.session, ServerDiscovery(fake.session, srv))
    for claimed in (f"127.0.0.1:{fake.port}", "example.test", "[::1]"):
        with pytest.raises(Unauthorized, match="Could not reach"):
            await guarded.verify(OpenIDToken("good-token", claimed))
    assert fake.userinfo_requests() == []


async def test_public_resolver_drops_private_addresses() -> None:
    resolver = PublicResolver()
    try:
        with pytest.raises(OSError, match="no public address"):
            await resolver.resolve("localhost", 8448)
    finally:
        await resolver.close()
    assert is_private_host("10.1.2.3") and is_private_host("[fd00::1]")
    assert not is_private_host("example.org") and not is_private_host("9.9.9.9")


async def test_lookups_are_limited_per_server_except_configured_ones(
    fake: FakeFederation,
) -> None:
    """Forged tokens are all different, so each would cost a request to its server."""
    srv = FakeSrv({"_matrix-fed._tcp.delegated.test": [("target.test", 8448)]})
    configured = {"other.test": URL(f"https://other.test:{fake.port}")}
    check = OpenIDVerifier(
        fake.session,
        ServerDiscovery(fake.session, srv, configured),
        per_server=RateLimiter(per_minute=2),
        private_hosts_allowed=True,
    )
    for number in range(2):
        with pytest.raises(Unauthorized):
            await check.verify(OpenIDToken(f"forged-{number}", "example.test"))
    with pytest.raises(RateLimited) as limited:
        await check.verify(OpenIDToken("forged-2", "example.test"))
    assert limited.value.retry_after_ms > 0
    assert len(fake.userinfo_requests()) == 2
    # Rejections are remembered: asking again costs nothing, and is not limited.
    with pytest.raises(Unauthorized, match="rejected"):
        await check.verify(OpenIDToken("forged-0", "example.test"))
    for number in range(3):
        with pytest.raises(Unauthorized):
            await check.verify(OpenIDToken(f"forged-{number}", "other.test"))
