"""The doctor's look at the deployment from where the bridge runs: the homeserver, the focus
through its public URL, the media ports, TURN. Each probe asks; :mod:`.judge` decides."""

from __future__ import annotations

from typing import Any
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
import asyncio
import errno
import socket
import time

from aioice.stun import TransactionFailed, TransactionTimeout
from aioice.turn import create_turn_endpoint
from aiortc.rtcicetransport import parse_stun_turn_uri
import aiohttp
import aioice.ice

from sfu import IceServer, MediaSettings

from ..config import Config
from ..focus.openid import USERINFO_PATH
from ..focus.service import openid_servers, signalling_url
from . import judge
from .findings import Finding, fail, ok, skip
from .probe_route import PROBE_PATH

HTTP_TIMEOUT_S = 10.0
TURN_TIMEOUT_S = 10.0
TRANSPORTS_PATH = "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports"
WELL_KNOWN_PATH = "/.well-known/matrix/client"
PROXY_FIX = (
    "the reverse proxy for focus.public_url must forward to focus.hostname:focus.port and "
    "pass WebSocket upgrades (nginx: proxy_http_version 1.1; proxy_set_header Upgrade "
    '$http_upgrade; proxy_set_header Connection "upgrade").'
)


@dataclass(frozen=True)
class Answer:
    status: int
    body: Any
    headers: dict[str, str]


def describe(error: BaseException) -> str:
    return str(error) or type(error).__name__


async def run_checks(config: Config, server_url: str) -> list[Finding]:
    """Every check, in the order an admin fixes things. ``server_url`` is where the server
    name's web site answers (``.well-known``)."""
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        findings = await _homeserver(session, config)
        findings.append(await _well_known(session, server_url, config["focus.public_url"]))
        findings.extend(await _focus(session, config))
    settings = config.media_settings()
    findings.extend(media_findings(settings, config.media_workers()))
    findings.extend(await turn_findings(settings.ice_servers_for("doctor", time.time())))
    return findings


async def _homeserver(session: aiohttp.ClientSession, config: Config) -> list[Finding]:
    address = str(config["homeserver.address"]).rstrip("/")
    ssl = bool(config["homeserver.verify_ssl"])
    dependent = ("registration", "clock", "openid", "rtc-transports")
    try:
        versions = await _get(session, f"{address}/_matrix/client/versions", ssl=ssl)
    except (aiohttp.ClientError, TimeoutError) as e:
        return [
            fail(
                "homeserver",
                f"cannot reach homeserver.address {address}: {describe(e)}",
                "start Synapse, or set homeserver.address to where this machine reaches its "
                "client API (e.g. http://127.0.0.1:8008).",
            ),
            *(skip(name, "the homeserver is not reachable") for name in dependent),
        ]
    if versions.status != 200 or not isinstance(versions.body, dict):
        return [
            fail(
                "homeserver",
                f"{address}/_matrix/client/versions answered {versions.status}",
                "homeserver.address must be the base URL of Synapse's client API.",
            ),
            *(skip(name, "the homeserver does not answer as one") for name in dependent),
        ]
    token = str(config["appservice.as_token"])
    date = versions.headers.get("Date")
    findings = [
        ok("homeserver", f"reachable at {address}"),
        judge.judge_clock(parsedate_to_datetime(date) if date else None, datetime.now(UTC)),
    ]
    own = openid_servers(config)[str(config["homeserver.domain"])]
    userinfo = str(own.with_path(own.path.rstrip("/") + USERINFO_PATH))
    try:
        whoami = await _get(session, f"{address}/_matrix/client/v3/account/whoami", token, ssl)
        findings.append(judge.judge_registration(whoami.status, whoami.body, config.bot_mxid))
        transports = await _get(session, f"{address}{TRANSPORTS_PATH}", token, ssl)
        findings.append(
            judge.judge_transports(transports.status, transports.body, config["focus.public_url"])
        )
        openid = await _get(session, f"{userinfo}?access_token=not-a-token", ssl=ssl)
        findings.append(judge.judge_openid(userinfo, openid.status, openid.body))
    except (aiohttp.ClientError, TimeoutError) as e:
        findings.append(fail("homeserver", f"stopped answering: {describe(e)}", "see its log."))
    return findings


async def _get(
    session: aiohttp.ClientSession, url: str, token: str = "", ssl: bool = True
) -> Answer:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with session.get(url, headers=headers, ssl=ssl) as response:
        try:
            body = await response.json(content_type=None)
        except ValueError:
            body = None
        return Answer(response.status, body, dict(response.headers))


async def _well_known(session: aiohttp.ClientSession, server_url: str, public_url: str) -> Finding:
    url = server_url.rstrip("/") + WELL_KNOWN_PATH
    try:
        answer = await _get(session, url)
    except (aiohttp.ClientError, TimeoutError) as e:
        return fail(
            "well-known",
            f"cannot fetch {url}: {describe(e)}",
            "serve it from the web server of your server name (or pass --server-url).",
        )
    cors = answer.headers.get("Access-Control-Allow-Origin")
    return judge.judge_well_known(url, answer.status, answer.body, cors, public_url)


async def _focus(session: aiohttp.ClientSession, config: Config) -> list[Finding]:
    public_url = str(config["focus.public_url"])
    host, port = str(config["focus.hostname"]), int(config["focus.port"])
    findings = [judge.judge_public_url(public_url)]
    local_ws = signalling_url("", _connectable(host), port) + PROBE_PATH
    try:
        local_id = await _focus_id(session, local_ws)
    except (aiohttp.ClientError, TimeoutError, ValueError) as e:
        local_id = None
        findings.append(
            fail(
                "bridge",
                f"the focus listener at focus.hostname:focus.port ({host}:{port}) does not "
                f"answer: {describe(e)}",
                "start the bridge (python -m bridge -c config.yaml), then run this again.",
            )
        )
    else:
        findings.append(ok("bridge", f"running; its focus listener answers at {host}:{port}"))
    if not public_url:
        return [*findings, skip("focus-proxy", "focus.public_url is empty")]
    health = public_url.rstrip("/") + "/healthz"
    try:
        answer = await _get(session, health)
    except (aiohttp.ClientError, TimeoutError) as e:
        return [
            *findings,
            fail("focus-health", f"cannot reach {health}: {describe(e)}", PROXY_FIX),
            skip("focus-websocket", "focus.public_url is not reachable"),
        ]
    if answer.status != 200:
        findings.append(fail("focus-health", f"{health} answered {answer.status}", PROXY_FIX))
    else:
        findings.append(ok("focus-health", f"{health} answers"))
    findings.append(await _public_websocket(session, public_url, local_id))
    return findings


async def _public_websocket(
    session: aiohttp.ClientSession, public_url: str, local_id: str | None
) -> Finding:
    name = "focus-websocket"
    url = signalling_url(public_url, "", 0) + PROBE_PATH
    try:
        public_id = await _focus_id(session, url)
    except aiohttp.WSServerHandshakeError as e:
        return fail(name, f"no WebSocket upgrade at {url} ({e.status})", PROXY_FIX)
    except (aiohttp.ClientError, TimeoutError, ValueError) as e:
        return fail(name, f"no WebSocket at {url}: {describe(e)}", PROXY_FIX)
    if local_id is None:
        return skip(name, f"{url} upgrades; whose focus it is, nothing answering here can tell")
    if public_id != local_id:
        return fail(
            name,
            f"{url} reaches another focus, not this bridge",
            "point the reverse proxy for focus.public_url at this bridge's focus listener.",
        )
    return ok(name, f"{url} reaches this bridge's focus through the proxy")


async def _focus_id(session: aiohttp.ClientSession, url: str) -> str:
    """The instance id the probe endpoint sends.

    Raises:
        aiohttp.ClientError, TimeoutError: no WebSocket there.
        ValueError: something answered, but not a focus of this bridge.
    """
    async with session.ws_connect(url) as ws:
        message = await ws.receive_json(timeout=HTTP_TIMEOUT_S)
    if not isinstance(message, dict) or not isinstance(message.get("focus"), str):
        raise ValueError("not this bridge's focus")
    return str(message["focus"])


def _connectable(host: str) -> str:
    """Where to connect to reach a listener bound to ``host``."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def media_findings(settings: MediaSettings, workers: int) -> list[Finding]:
    """The media ports free to bind (each of ``workers`` media workers has its own shared
    port, from ``media.udp_port`` on), and the public IP."""
    port_range = (
        (settings.udp_port_min, settings.udp_port_max)
        if settings.udp_port_min is not None and settings.udp_port_max is not None
        else None
    )
    findings = []
    for address in settings.bind_addresses or ("0.0.0.0",):
        if settings.single_port and settings.udp_port:
            ports = (settings.udp_port, settings.udp_port + max(workers, 1) - 1)
            taken, unusable = _bind_ports(address, ports)
            findings.append(judge.judge_media_port(ports, address, taken, unusable))
            continue
        taken, unusable = _bind_ports(address, port_range)
        findings.append(judge.judge_media_ports(port_range, address, taken, unusable))
    local = list(settings.bind_addresses) or aioice.ice.get_host_addresses(
        use_ipv4=True, use_ipv6=False
    )
    findings.append(judge.judge_public_ip(settings.public_ip, local))
    return findings


def _bind_ports(address: str, port_range: tuple[int, int] | None) -> tuple[list[int], str | None]:
    """The ports of the range that are in use, or why ``address`` cannot be bound at all."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    ports = range(port_range[0], port_range[1] + 1) if port_range else range(0, 1)
    taken = []
    for port in ports:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind((address, port))
            except OSError as e:
                if e.errno != errno.EADDRINUSE:
                    return [], e.strerror or describe(e)
                taken.append(port)
    return taken, None


async def turn_findings(servers: tuple[IceServer, ...]) -> list[Finding]:
    """A TURN allocation with the configured credentials on each TURN URL."""
    urls = [(url, server) for server in servers for url in server.urls if url.startswith("turn")]
    if not urls:
        return [
            skip("turn", "no TURN server in media.ice_servers or media.turn_uris, not checked")
        ]
    return [await _allocate(url, server) for url, server in urls]


async def _allocate(url: str, server: IceServer) -> Finding:
    name = "turn"
    try:
        parsed = parse_stun_turn_uri(url)
    except ValueError as e:
        return fail(name, f"{url}: {e}", "write TURN URLs as turn:host:port?transport=udp.")
    try:
        async with asyncio.timeout(TURN_TIMEOUT_S):
            transport, _ = await create_turn_endpoint(
                asyncio.DatagramProtocol,
                (parsed["host"], parsed["port"]),
                server.username,
                server.credential,
                ssl=parsed["scheme"] == "turns",
                transport=parsed["transport"],
            )
    except TransactionFailed as e:
        code, reason = e.response.attributes.get("ERROR-CODE", (0, "refused"))
        if code == 401:
            return fail(
                name,
                f"{url} refuses the credentials (401 {reason})",
                "set media.ice_servers username/credential to a user the TURN server knows "
                "(coturn: user=…), or media.turn_shared_secret to its static-auth-secret.",
            )
        return fail(name, f"{url} refuses an allocation ({code} {reason})", "see its log.")
    except (OSError, TimeoutError, TransactionTimeout, ConnectionError) as e:
        return fail(
            name,
            f"no answer from {url}: {describe(e)}",
            "check the address, that the TURN server runs, and that its port is open.",
        )
    transport.close()
    return ok(name, f"{url} accepts the credentials (allocation made and released)")
