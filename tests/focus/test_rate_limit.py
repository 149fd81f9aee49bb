"""Token buckets and client addresses: pure logic, with simulated time."""

from __future__ import annotations

import pytest

from bridge.focus.client_address import ClientAddresses, parse_networks
from bridge.focus.rate_limit import RateLimited, RateLimiter, TokenBucket


def test_a_bucket_allows_its_burst_then_refills_at_its_rate() -> None:
    bucket = TokenBucket.full(capacity=3, rate=0.5, now=100.0)
    assert [bucket.take(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(100.0) == pytest.approx(2.0)
    assert bucket.take(101.0) == pytest.approx(1.0)
    assert bucket.take(102.0) == 0.0
    assert bucket.take(102.0) > 0
    # Refilled, but never above its capacity.
    assert bucket.is_full(1000.0)
    assert [bucket.take(1000.0) for _ in range(4)][-1] > 0


def test_time_going_backwards_grants_nothing() -> None:
    bucket = TokenBucket.full(capacity=1, rate=1.0, now=50.0)
    assert bucket.take(50.0) == 0.0
    assert bucket.take(10.0) > 0
    assert bucket.take(51.0) == 0.0


def test_the_limiter_counts_each_key_on_its_own() -> None:
    limiter = RateLimiter(per_minute=2)
    assert limiter.check("a", 0.0) == 0.0
    assert limiter.check("a", 1.0) == 0.0
    assert limiter.check("a", 2.0) == pytest.approx(28.0)
    assert limiter.check("b", 2.0) == 0.0
    assert limiter.check("a", 30.0) == 0.0


def test_zero_per_minute_means_no_limit() -> None:
    limiter = RateLimiter(per_minute=0)
    assert all(limiter.check("a", 0.0) == 0.0 for _ in range(1000))
    assert len(limiter) == 0
    with pytest.raises(ValueError):
        RateLimiter(per_minute=-1)


def test_keys_are_bounded_forgetting_full_buckets_first() -> None:
    limiter = RateLimiter(per_minute=1, max_keys=3)
    assert limiter.check("busy", 0.0) == 0.0
    for key in ("x", "y"):
        limiter.check(key, 0.0)
    assert limiter.check("busy", 1.0) > 0
    # At t=30 no bucket is full; a new key evicts the least recently used one (x).
    limiter.check("z", 30.0)
    assert len(limiter) == 3
    assert limiter.check("busy", 30.0) > 0  # still remembered
    assert limiter.check("x", 30.0) == 0.0  # forgotten: a fresh bucket
    # At t=100 every bucket is full again: they are forgotten before anything else.
    limiter.check("new", 100.0)
    assert len(limiter) == 1


def test_rate_limited_answers_whole_milliseconds() -> None:
    assert RateLimited("slow down", 0.0001).retry_after_ms == 1
    assert RateLimited("slow down", 2.5).retry_after_ms == 2500


PROXIES = ClientAddresses(parse_networks(["10.0.0.0/8", "::1"]))


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("203.0.113.5", ["198.51.100.1"], "203.0.113.5"),  # not a proxy: header ignored
        ("10.1.2.3", ["198.51.100.1"], "198.51.100.1"),
        ("10.1.2.3", ["6.6.6.6, 198.51.100.1"], "198.51.100.1"),  # left of it: client's claim
        ("10.1.2.3", ["198.51.100.1, 10.9.9.9"], "198.51.100.1"),  # a chain of proxies
        ("10.1.2.3", ["198.51.100.1", "10.9.9.9"], "198.51.100.1"),  # repeated headers
        ("10.1.2.3", ["junk, 10.9.9.9"], "10.9.9.9"),
        ("10.1.2.3", [], "10.1.2.3"),
        ("::1", ["2001:db8::1"], "2001:db8::1"),
    ],
)
def test_client_addresses_trust_forwarded_for_only_from_proxies(
    peer: str, forwarded: list[str], client: str
) -> None:
    assert PROXIES.client_of(peer, forwarded) == client


def test_bad_proxy_networks_are_named() -> None:
    with pytest.raises(ValueError, match=r"'proxy\.example'"):
        parse_networks(["10.0.0.1", "proxy.example"])
