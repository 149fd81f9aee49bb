"""Verdicts on what the probes saw: pure functions, each turning answers into a finding."""

from __future__ import annotations

from typing import Any
from datetime import datetime
import ipaddress

from yarl import URL

from .findings import Finding, fail, ok, skip, warn

MAX_CLOCK_SKEW_S = 30.0
WELL_KNOWN_FOCI = "org.matrix.msc4143.rtc_foci"
RESTART_SYNAPSE = "then restart Synapse."


def same_url(a: str, b: str) -> bool:
    """URLs equal up to a trailing slash and the case of scheme and host."""
    try:
        left, right = URL(a.rstrip("/")), URL(b.rstrip("/"))
    except ValueError:
        return False
    return left == right


def errcode(body: Any) -> str:
    return str(body.get("errcode", "")) if isinstance(body, dict) else ""


def judge_registration(status: int, body: Any, bot_mxid: str) -> Finding:
    """``/account/whoami`` with the appservice token."""
    name = "registration"
    if status == 200 and isinstance(body, dict) and body.get("user_id") == bot_mxid:
        return ok(name, f"the homeserver accepts the appservice token (bot {bot_mxid})")
    if status == 200 and isinstance(body, dict):
        return fail(
            name,
            f"the homeserver says the bot is {body.get('user_id')}, not {bot_mxid}",
            "make appservice.bot.username match sender_localpart in the registration file.",
        )
    if errcode(body) == "M_UNKNOWN_TOKEN":
        return fail(
            name,
            "the homeserver does not know appservice.as_token",
            "list registration.yaml in app_service_config_files of homeserver.yaml (regenerate "
            "it with -g if the config's tokens changed), " + RESTART_SYNAPSE,
        )
    return fail(
        name,
        f"whoami with the appservice token answered {status} {errcode(body)}".rstrip(),
        "check the homeserver's log for the appservice registration.",
    )


def judge_clock(server_date: datetime | None, now: datetime) -> Finding:
    """This machine's clock against the homeserver's ``Date`` header (tokens carry times)."""
    name = "clock"
    if server_date is None:
        return skip(name, "the homeserver sent no Date header to compare with")
    skew = (now - server_date).total_seconds()
    if abs(skew) > MAX_CLOCK_SKEW_S:
        side = "ahead of" if skew > 0 else "behind"
        return fail(
            name,
            f"this machine's clock is {abs(skew):.0f} s {side} the homeserver's",
            "run NTP (systemd-timesyncd or chrony) on both machines.",
        )
    return ok(name, f"within {MAX_CLOCK_SKEW_S:.0f} s of the homeserver's clock")


def judge_openid(url: str, status: int, body: Any) -> Finding:
    """``/_matrix/federation/v1/openid/userinfo`` asked with a token that cannot exist: a
    listener with the ``openid`` resource refuses it with M_UNKNOWN_TOKEN."""
    name = "openid"
    if status == 401 and errcode(body) == "M_UNKNOWN_TOKEN":
        return ok(name, f"{url} answers OpenID userinfo requests")
    return fail(
        name,
        f"{url} does not answer OpenID userinfo requests ({status} {errcode(body)})".replace(
            " )", ")"
        ),
        "add the `openid` (or `federation`) resource to the resources of the Synapse listener "
        "at homeserver.address (or set focus.openid.homeservers), " + RESTART_SYNAPSE,
    )


def judge_transports(status: int, body: Any, public_url: str) -> Finding:
    """Synapse's ``/rtc/transports`` (MSC4143), where Element Call finds its focus."""
    name = "rtc-transports"
    wanted = (
        "matrix_rtc: {transports: [{type: livekit, livekit_service_url: "
        f"{public_url or '<focus.public_url>'}}}]}} to homeserver.yaml"
    )
    if status == 404 or errcode(body) == "M_UNRECOGNIZED":
        return fail(
            name,
            "the homeserver does not serve /rtc/transports",
            f"set experimental_features.msc4143_enabled: true and add {wanted}, "
            + RESTART_SYNAPSE,
        )
    if status != 200 or not isinstance(body, dict):
        return fail(
            name,
            f"/rtc/transports answered {status} {errcode(body)}".rstrip(),
            "check the homeserver's log.",
        )
    urls = [
        str(transport.get("livekit_service_url"))
        for transport in body.get("rtc_transports") or []
        if isinstance(transport, dict) and transport.get("type") == "livekit"
    ]
    if public_url and any(same_url(url, public_url) for url in urls):
        return ok(name, f"the homeserver announces this focus ({public_url})")
    found = ", ".join(urls) if urls else "no livekit transport"
    return fail(
        name,
        f"the homeserver announces {found}, not focus.public_url",
        f"add {wanted}, " + RESTART_SYNAPSE,
    )


def judge_well_known(
    url: str, status: int, body: Any, cors: str | None, public_url: str
) -> Finding:
    """``.well-known/matrix/client`` on the server name, which FluffyChat and older clients
    read for ``rtc_foci``."""
    name = "well-known"
    snippet = (
        f'"{WELL_KNOWN_FOCI}": [{{"type": "livekit", "livekit_service_url": '
        f'"{public_url or "<focus.public_url>"}"}}]'
    )
    if status != 200 or not isinstance(body, dict):
        return fail(
            name,
            f"{url} answered {status}, not JSON",
            f"serve it as application/json from your web server, with {snippet}.",
        )
    foci = body.get(WELL_KNOWN_FOCI)
    urls = [
        str(focus.get("livekit_service_url"))
        for focus in (foci if isinstance(foci, list) else [])
        if isinstance(focus, dict) and focus.get("type") == "livekit"
    ]
    if not public_url or not any(same_url(found, public_url) for found in urls):
        announced = ", ".join(urls) if urls else f"no {WELL_KNOWN_FOCI}"
        return fail(name, f"{url} has {announced}, not focus.public_url", f"add {snippet}.")
    if cors != "*":
        return fail(
            name,
            f"{url} has no Access-Control-Allow-Origin: * header; web clients cannot read it",
            "add that header where your web server serves .well-known/matrix/.",
        )
    return ok(name, f"{url} announces this focus")


def judge_public_url(public_url: str) -> Finding:
    name = "focus.public_url"
    if not public_url:
        return fail(
            name,
            "empty: tokens send clients to the focus listener itself, which only this machine "
            "reaches",
            "publish focus.hostname:focus.port through your TLS reverse proxy (README, "
            "'Publish the focus') and set focus.public_url to its https:// URL.",
        )
    url = URL(public_url)
    if url.scheme != "https" and not _is_loopback(url.host or ""):
        return warn(
            name,
            f"{public_url} is not https: browsers refuse media and WebSockets without TLS",
            "serve it through your TLS reverse proxy.",
        )
    return ok(name, public_url)


def judge_public_ip(public_ip: str | None, local_addresses: list[str]) -> Finding:
    """``media.public_ip`` must be an address the internet reaches; without it, the local
    addresses are announced, which is fine unless they are all private (NAT)."""
    name = "public-ip"
    if public_ip:
        try:
            address = ipaddress.ip_address(public_ip)
        except ValueError:
            return fail(name, f"media.public_ip {public_ip!r} is not an IP address", _SET_IP)
        if not address.is_global:
            return fail(
                name,
                f"media.public_ip {public_ip} is a private or reserved address, which "
                "participants elsewhere cannot reach",
                _SET_IP,
            )
        return ok(name, f"announcing {public_ip}")
    public = [a for a in local_addresses if ipaddress.ip_address(a.split("%")[0]).is_global]
    if public:
        return ok(name, f"announcing this machine's public addresses ({', '.join(public)})")
    return warn(
        name,
        "this machine has no public address, and media.public_ip is empty: participants "
        "outside this network cannot send media unless TURN relays it",
        "behind 1:1 NAT (a cloud VM), " + _SET_IP,
    )


_SET_IP = "set media.public_ip to the public IPv4 address that forwards to this machine."


def judge_media_port(
    ports: tuple[int, int], address: str, taken: list[int], unusable: str | None
) -> Finding:
    """The shared media ports (``media.udp_port``, one more for each media worker after the
    first): a running bridge holds them, so in use is only a problem when it is stopped."""
    name = "media-ports"
    if unusable:
        return _unbindable(address, unusable)
    low, high = ports
    shown = f"{low}" if low == high else f"{low}-{high}"
    if taken:
        return warn(
            name,
            f"UDP {'port' if len(taken) == 1 else 'ports'} {', '.join(map(str, taken))} on "
            f"{address} in use: by this bridge if it is running, else by another program",
            "if the bridge is stopped, stop the other program or choose another media.udp_port.",
        )
    return ok(
        name,
        f"UDP {shown} free on {address}; open {'it' if low == high else 'them'} for inbound UDP",
    )


def _unbindable(address: str, unusable: str) -> Finding:
    return fail(
        "media-ports",
        f"cannot bind UDP on {address}: {unusable}",
        "media.bind_addresses must list addresses of this machine (or be empty).",
    )


def judge_media_ports(
    port_range: tuple[int, int] | None, address: str, taken: list[int], unusable: str | None
) -> Finding:
    """Whether the SFU can bind its UDP ports: free when no call runs."""
    name = "media-ports"
    if unusable:
        return _unbindable(address, unusable)
    if port_range is None:
        return warn(
            name,
            "media.udp_port and media.udp_port_min/udp_port_max are 0: media uses any free UDP "
            "port, so the firewall must let in all of them",
            "set media.udp_port (e.g. 29335) and open just that for inbound UDP.",
        )
    low, high = port_range
    if taken:
        shown = ", ".join(str(port) for port in taken[:5]) + (", …" if len(taken) > 5 else "")
        return fail(
            name,
            f"{len(taken)} of {high - low + 1} UDP ports in {low}-{high} on {address} are in "
            f"use ({shown}), by calls in progress or another program",
            "stop the other program, or move media.udp_port_min/udp_port_max to a free range.",
        )
    return ok(name, f"UDP {low}-{high} free on {address}; open them for inbound UDP")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
