"""``python -m bridge doctor`` against the real test deployment (Synapse and the running bridge),
then with one misconfiguration at a time: each is caught, on its own line, with its fix."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
import asyncio
import shutil
import socket
import sys

from aiohttp import ClientSession, web
import pytest

from bridge.doctor.cli import diagnose
from bridge.doctor.findings import Finding, Status
from bridge.doctor.judge import judge_clock, same_url
from bridge.doctor.probes import turn_findings
from bridge.focus.openid import USERINFO_PATH
from demo.bridge_process import BridgeProcess, edit_config
from demo.loopback_http import serve
from demo.ports import free_port, free_udp_port
from demo.synapse import Synapse
from demo.waiting import eventually
from sfu import IceServer

from .support.coturn import coturn as start_coturn

FOCI = "org.matrix.msc4143.rtc_foci"


def well_known_app(content: dict, cors: bool = True) -> web.Application:
    """The server name's web site, serving ``.well-known/matrix/client``."""

    async def well_known(_request: web.Request) -> web.Response:
        headers = {"Access-Control-Allow-Origin": "*"} if cors else {}
        return web.json_response(content, headers=headers)

    app = web.Application()
    app.router.add_get("/.well-known/matrix/client", well_known)
    return app


def announcing(focus_url: str) -> dict:
    return {FOCI: [{"type": "livekit", "livekit_service_url": focus_url}]}


def misconfigured_homeserver(
    upstream: str, *, without_openid: bool = False, clock_offset: timedelta | None = None
) -> web.Application:
    """The real Synapse behind a listener that lacks the ``openid`` resource (answering as
    Synapse does for a path it does not serve), or on a machine whose clock is off."""

    async def forward(request: web.Request) -> web.Response:
        if without_openid and request.path == USERINFO_PATH:
            return web.json_response(
                {"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}, status=404
            )
        async with (
            ClientSession() as session,
            session.request(
                request.method,
                upstream + request.rel_url.path_qs,
                headers={k: v for k, v in request.headers.items() if k.lower() != "host"},
                data=await request.read(),
            ) as response,
        ):
            body = await response.read()
            headers = {"Content-Type": response.headers.get("Content-Type", "")}
        if clock_offset is not None:
            headers["Date"] = format_datetime(datetime.now(UTC) + clock_offset, usegmt=True)
        return web.Response(body=body, status=response.status, headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", forward)
    return app


def config_with(bridge: BridgeProcess, directory: Path, changes: dict) -> Path:
    """A copy of the test bridge's working config with some keys changed."""
    path = directory / "config.yaml"
    shutil.copy(bridge.config_path, path)
    edit_config(path, changes)
    return path


def found(findings: list[Finding], check: str) -> Finding:
    matching = [finding for finding in findings if finding.check == check]
    assert len(matching) == 1, findings
    return matching[0]


def assert_failed(findings: list[Finding], check: str, text: str) -> None:
    finding = found(findings, check)
    assert finding.status is Status.FAIL, finding
    assert text in finding.line(), finding.line()
    assert "Fix: " in finding.line()


@pytest.fixture
async def web_site(running_bridge: BridgeProcess) -> AsyncIterator[str]:
    """A server name's web site that announces the test bridge's focus."""
    async with serve(well_known_app(announcing(running_bridge.focus_url))) as url:
        yield url


async def test_a_healthy_deployment_passes(
    running_bridge: BridgeProcess, synapse: Synapse, web_site: str
) -> None:
    """The command as an admin runs it (its own process; this loop serves the web site)."""
    process = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "bridge", "doctor", "-c", str(running_bridge.config_path)),
        *("--server-url", web_site),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(120):
        output, _ = await process.communicate()
    stdout = output.decode()
    assert process.returncode == 0, stdout
    lines = stdout.splitlines()
    for check in (
        "homeserver",
        "registration",
        "clock",
        "openid",
        "rtc-transports",
        "well-known",
        "bridge",
        "focus-health",
        "focus-websocket",
    ):
        assert any(line.split()[:2] == ["ok", check] for line in lines), (check, stdout)
    assert any(line.split()[:2] == ["skip", "turn"] for line in lines), stdout
    assert "No problems found." in stdout


async def test_unreachable_homeserver(
    running_bridge: BridgeProcess, web_site: str, tmp_path: Path
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    config = config_with(running_bridge, tmp_path, {"homeserver.address": closed})
    findings = await diagnose(config, web_site)
    assert_failed(findings, "homeserver", f"cannot reach homeserver.address {closed}")
    assert found(findings, "openid").status is Status.SKIP


async def test_registration_not_accepted(
    running_bridge: BridgeProcess, web_site: str, tmp_path: Path
) -> None:
    config = config_with(running_bridge, tmp_path, {"appservice.as_token": "not-registered"})
    findings = await diagnose(config, web_site)
    assert_failed(findings, "registration", "does not know appservice.as_token")


async def test_listener_without_openid_resource(
    running_bridge: BridgeProcess, synapse: Synapse, web_site: str, tmp_path: Path
) -> None:
    async with serve(misconfigured_homeserver(synapse.base_url, without_openid=True)) as url:
        config = config_with(running_bridge, tmp_path, {"homeserver.address": url})
        findings = await diagnose(config, web_site)
    assert_failed(findings, "openid", "does not answer OpenID userinfo requests (404")
    assert found(findings, "registration").status is Status.OK


async def test_clock_skew(
    running_bridge: BridgeProcess, synapse: Synapse, web_site: str, tmp_path: Path
) -> None:
    offset = timedelta(minutes=-5)
    async with serve(misconfigured_homeserver(synapse.base_url, clock_offset=offset)) as url:
        config = config_with(running_bridge, tmp_path, {"homeserver.address": url})
        findings = await diagnose(config, web_site)
    assert_failed(findings, "clock", "s ahead of the homeserver's")


async def test_public_url_pointing_nowhere(
    running_bridge: BridgeProcess, web_site: str, tmp_path: Path
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    config = config_with(running_bridge, tmp_path, {"focus.public_url": nowhere})
    findings = await diagnose(config, web_site)
    assert_failed(findings, "focus-health", f"cannot reach {nowhere}/healthz")
    # What Synapse and the well-known announce is no longer this URL either.
    assert_failed(findings, "rtc-transports", "not focus.public_url")
    assert_failed(findings, "well-known", "not focus.public_url")


async def test_bridge_not_running(
    running_bridge: BridgeProcess, web_site: str, tmp_path: Path
) -> None:
    """The config's focus listener is not the running bridge's: nobody answers there."""
    port = free_port()
    config = config_with(running_bridge, tmp_path, {"focus.port": port})
    findings = await diagnose(config, web_site)
    assert_failed(findings, "bridge", f"(127.0.0.1:{port}) does not answer")
    # The public URL still reaches a focus, but nothing here can say it is this bridge's.
    assert found(findings, "focus-websocket").status is Status.SKIP


async def test_proxy_without_websocket_upgrades(
    running_bridge: BridgeProcess, tmp_path: Path
) -> None:
    """A proxy that forwards plain requests but drops the Upgrade header: the health check
    passes, signalling would not."""

    async def plain(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    proxy = web.Application()
    proxy.router.add_get("/{path:.*}", plain)
    async with serve(proxy) as proxy_url:
        config = config_with(running_bridge, tmp_path, {"focus.public_url": proxy_url})
        async with serve(well_known_app(announcing(proxy_url))) as site:
            findings = await diagnose(config, site)
    assert found(findings, "focus-health").status is Status.OK
    assert_failed(findings, "focus-websocket", "no WebSocket upgrade")
    assert found(findings, "well-known").status is Status.OK


async def test_well_known_without_rtc_foci(running_bridge: BridgeProcess) -> None:
    no_foci = {"m.homeserver": {"base_url": "https://matrix.example.org"}}
    async with serve(well_known_app(no_foci)) as site:
        findings = await diagnose(running_bridge.config_path, site)
    assert_failed(findings, "well-known", f"no {FOCI}")


async def test_well_known_without_cors(running_bridge: BridgeProcess) -> None:
    async with serve(well_known_app(announcing(running_bridge.focus_url), cors=False)) as site:
        findings = await diagnose(running_bridge.config_path, site)
    assert_failed(findings, "well-known", "no Access-Control-Allow-Origin")


async def test_media_port_already_bound(
    running_bridge: BridgeProcess, web_site: str, tmp_path: Path
) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other_program:
        other_program.bind(("127.0.0.1", 0))
        port = other_program.getsockname()[1]
        config = config_with(
            running_bridge, tmp_path, {"media.udp_port_min": port, "media.udp_port_max": port}
        )
        findings = await diagnose(config, web_site)
    assert_failed(findings, "media-ports", f"1 of 1 UDP ports in {port}-{port} on 127.0.0.1")


async def test_media_port_held_by_the_running_bridge(
    running_bridge: BridgeProcess, web_site: str, tmp_path: Path
) -> None:
    findings = await diagnose(running_bridge.config_path, web_site)
    held = found(findings, "media-ports")
    assert held.status is Status.WARN, held
    assert "by this bridge if it is running" in held.line()

    first = free_udp_port(3)
    free = config_with(running_bridge, tmp_path, {"media.udp_port": first, "media.workers": 3})
    ok = found(await diagnose(free, web_site), "media-ports")
    assert ok.status is Status.OK, ok
    assert f"UDP {first}-{first + 2} free" in ok.line()

    # Each media worker has a port of its own after media.udp_port: all of them are checked.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other_program:
        other_program.bind(("127.0.0.1", first + 2))
        third_taken = found(await diagnose(free, web_site), "media-ports")
    assert third_taken.status is Status.WARN, third_taken
    assert f"UDP port {first + 2} on 127.0.0.1 in use" in third_taken.line()


async def test_private_public_ip(
    running_bridge: BridgeProcess, web_site: str, tmp_path: Path
) -> None:
    config = config_with(running_bridge, tmp_path, {"media.public_ip": "10.1.2.3"})
    findings = await diagnose(config, web_site)
    assert_failed(findings, "public-ip", "10.1.2.3 is a private or reserved address")


async def test_bad_config_is_reported_before_probing(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    findings = await diagnose(path)
    assert_failed(findings, "config", "does not exist")


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """coturn on loopback with one long-term-credential user."""
    options = ("--lt-cred-mech", "--user=doctor:right-secret", "--realm=doctor.test")
    with start_coturn(tmp_path, "127.0.0.1", *options) as port:
        yield port, "right-secret"


async def test_turn_credentials(coturn: tuple[int, str]) -> None:
    port, secret = coturn
    url = f"turn:127.0.0.1:{port}?transport=udp"

    async def accepted() -> Finding | None:
        [finding] = await turn_findings((IceServer((url,), "doctor", secret),))
        return finding if finding.status is Status.OK else None

    await eventually(accepted, timeout=30)
    [refused] = await turn_findings((IceServer((url,), "doctor", "wrong"),))
    assert refused.status is Status.FAIL
    assert "refuses the credentials (401" in refused.line()


def test_clock_verdicts_with_simulated_time() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert judge_clock(now - timedelta(seconds=20), now).status is Status.OK
    behind = judge_clock(now + timedelta(seconds=90), now)
    assert behind.status is Status.FAIL
    assert "90 s behind" in behind.message
    assert judge_clock(None, now).status is Status.SKIP


def test_urls_compare_as_clients_use_them() -> None:
    assert same_url("https://RTC.example.org/", "https://rtc.example.org")
    assert not same_url("https://rtc.example.org/a", "https://rtc.example.org")
    assert not same_url("http://rtc.example.org", "https://rtc.example.org")
