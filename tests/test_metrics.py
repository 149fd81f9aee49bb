"""Prometheus metrics of a running bridge (metrics enabled by the test harness's config):
they follow a call, and count token requests by outcome."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
import json
import re

from mautrix.types import RoomID
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
import aiohttp

from bridge.media import MediaFigures
from bridge.metrics import MetricsServer, MetricsSettings
from demo.bridge_process import BridgeProcess
from demo.livekit_client import wait_until
from demo.synapse import MatrixUser, Synapse
from demo.waiting import eventually

from .support.calls import LUMAS, ClientFactory, decodes
from .support.configs import example_config_with

REPO = Path(__file__).resolve().parents[1]
METRIC_NAME = re.compile(r"\b(?:bridge|process)_[a-z_]+\b")
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(bridge: BridgeProcess) -> Samples:
    async with aiohttp.ClientSession() as session, session.get(bridge.metrics_url) as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        text = await response.text()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def scraped_when(bridge: BridgeProcess, condition: Callable[[Samples], bool]) -> Samples:
    async def probe() -> Samples | None:
        samples = await scrape(bridge)
        return samples if condition(samples) else None

    return await eventually(probe, timeout=30, interval=0.5)


async def test_metrics_follow_a_call(
    connect: ClientFactory,
    running_bridge: BridgeProcess,
    synapse: Synapse,
    users: dict[str, MatrixUser],
    room_id: RoomID,
) -> None:
    before = await scrape(running_bridge)
    assert value(before, "bridge_up") == 1
    assert value(before, "bridge_start_time_seconds") > 0
    assert value(before, "process_cpu_seconds_total") > 0
    assert value(before, "bridge_participants") == 0

    alice, bob = await connect("alice"), await connect("bob")
    await alice.publish(luma=LUMAS["alice"], amplitude=0.5)
    await bob.publish(luma=LUMAS["bob"], amplitude=0.5)
    await wait_until(
        lambda: decodes(bob, alice, LUMAS["alice"]) and decodes(alice, bob, LUMAS["bob"])
    )

    def grew(samples: Samples, name: str, by: float, **labels: str) -> bool:
        return value(samples, name, **labels) >= value(before, name, **labels) + by

    during = await scraped_when(
        running_bridge,
        lambda s: (
            value(s, "bridge_participants") == 2
            and value(s, "bridge_subscriptions") == 4
            and grew(s, "bridge_media_packets_total", 100, direction="in")
            and grew(s, "bridge_media_packets_total", 100, direction="out")
        ),
    )
    assert value(during, "bridge_conferences") >= 1
    assert value(during, "bridge_published_tracks", kind="video") == 2
    assert value(during, "bridge_published_tracks", kind="audio") == 2
    assert grew(during, "bridge_media_bytes_total", 100 * 12, direction="in")
    assert grew(during, "bridge_media_bytes_total", 100 * 12, direction="out")
    assert grew(during, "bridge_media_keyframe_requests_total", 1, direction="out")
    assert grew(during, "bridge_token_requests_total", 2, outcome="issued")
    assert grew(during, "bridge_openid_lookup_seconds_count", 2)
    assert value(during, "bridge_database_errors_total") == 0

    # mallory may not use the bridge: her token request is refused and counted so.
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{running_bridge.focus_url}/sfu/get",
            json={
                "room": room_id,
                "openid_token": synapse.openid_token(users["mallory"]),
                "device_id": users["mallory"].device_id,
            },
        ) as response,
    ):
        assert response.status == 403
    await alice.close()
    await bob.close()
    after = await scraped_when(running_bridge, lambda s: value(s, "bridge_participants") == 0)
    assert grew(after, "bridge_token_requests_total", 1, outcome="forbidden")
    # Counters never go back, though the participants that counted are gone.
    for direction in ("in", "out"):
        labels = {"direction": direction}
        packets = value(after, "bridge_media_packets_total", **labels)
        assert packets >= value(during, "bridge_media_packets_total", **labels)


def test_dashboard_queries_only_exported_metrics() -> None:
    """Every metric the Grafana dashboard queries is one the bridge exports."""
    exported = {
        sample.name
        for family in text_string_to_metric_families(
            generate_latest(MetricsServer(MetricsSettings(), MediaFigures).registry).decode()
        )
        for sample in family.samples
    }
    dashboard = json.loads((REPO / "docs" / "grafana-dashboard.json").read_text())
    exprs = [
        target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])
    ]
    queried = {name for expr in exprs for name in METRIC_NAME.findall(expr)}
    assert len(queried) > 15
    assert queried <= exported, queried - exported


def test_metrics_are_off_by_default_and_their_keys_checked(tmp_path: Path) -> None:
    assert example_config_with(tmp_path, {}).metrics_settings() == MetricsSettings(
        enabled=False, hostname="127.0.0.1", port=29336
    )
    bad = example_config_with(
        tmp_path,
        {
            "homeserver.domain": "example.org",
            "metrics.enabled": True,
            "metrics.port": 29334,  # the focus's
        },
    )
    [problem] = bad.problems(need_tokens=False)
    assert str(problem) == "metrics.port: must differ from appservice.port and focus.port"
    bad = example_config_with(tmp_path, {"homeserver.domain": "example.org", "metrics.enabled": 1})
    assert [str(p) for p in bad.problems(need_tokens=False)] == [
        "metrics.enabled: must be true or false"
    ]
