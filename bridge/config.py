"""The bridge's YAML configuration: loading, in-place upgrade and validation.

The admin's file is round-tripped with ruamel.yaml on top of the shipped example, so upgrades
add new keys with their comments and keep every value the admin set.
"""

from __future__ import annotations

from typing import Any
from dataclasses import dataclass, fields
from pathlib import Path
import json
import os
import re

from mautrix.util.config import BaseFileConfig, ConfigUpdateHelper, RecursiveDict
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from yarl import URL

from sfu import IceServer, MediaSettings, TurnSecret

from . import resources
from .focus.access import RoomsWithoutBot
from .focus.client_address import IPNetwork, parse_networks
from .focus.limits import FocusLimits
from .guests.settings import GuestSettings
from .livekit.service import SessionLimits
from .metrics import MetricsSettings
from .permissions import PermissionLevel

TOKEN_PLACEHOLDER = "This value is generated when generating the registration"
_SERVER_NAME = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")
_USER_ID = re.compile(r"^@[^:\s]+:[^\s]+$")
LIMITS = (
    "tracks_per_participant",
    "sessions_per_user",
    "participants_per_room",
    "connecting",
    "connect_timeout",
)
"""The keys of ``media.limits``."""


@dataclass(frozen=True)
class ConfigProblem:
    """One invalid value, named by its dotted key so the admin knows where to look."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


class InvalidConfigError(ValueError):
    """The configuration cannot be used; carries every problem found, not just the first."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(problem) for problem in problems))


@dataclass(frozen=True)
class RedisSettings:
    url: str
    prefix: str


@dataclass(frozen=True)
class NodeSettings:
    """A media node's identity and its listener for clients' signalling."""

    node_id: str
    public_url: str
    hostname: str
    port: int


class Config(BaseFileConfig):
    """The bridge's config file, upgraded from the shipped ``example-config.yaml``."""

    def __init__(self, path: str) -> None:
        super().__init__(path, base_path="")

    def load_base(self) -> RecursiveDict[CommentedMap] | None:
        return RecursiveDict(YAML().load(resources.example_config()), CommentedMap)

    def do_update(self, helper: ConfigUpdateHelper) -> None:
        copy = helper.copy
        for key in (
            "homeserver.address",
            "homeserver.domain",
            "homeserver.verify_ssl",
            "appservice.address",
            "appservice.hostname",
            "appservice.port",
            "appservice.database",
            "appservice.id",
            "appservice.bot.username",
            "appservice.bot.displayname",
            "appservice.bot.avatar",
            "appservice.bot.device_id",
            "appservice.ghost_username_template",
            "appservice.as_token",
            "appservice.hs_token",
            "bridge.command_prefix",
            "bridge.history_retention_days",
            "bridge.call_notices",
            "bridge.call_end_grace",
            "bridge.moderation.level",
            "bridge.moderation.removal_minutes",
            *(f"bridge.guests.{field.name}" for field in fields(GuestSettings)),
            "dialin.enabled",
            "dialin.displayname",
            "dialin.max_calls_per_room",
            "media.public_ip",
            "media.workers",
            "media.drain_grace",
            "media.udp_port",
            "media.udp_port_min",
            "media.udp_port_max",
            "media.max_publish_bitrate",
            "focus.hostname",
            "focus.port",
            "focus.public_url",
            "focus.token_lifetime",
            "focus.resume_grace",
            "focus.rooms_without_bot",
            "focus.trusted_proxies",
            "focus.homeserver_proxy",
            "focus.delegated_leave_grace",
            *(f"focus.limits.{field.name}" for field in fields(FocusLimits)),
            "media.bind_addresses",
            "media.ice_servers",
            "media.turn_uris",
            "media.turn_shared_secret",
            "media.turn_ttl",
            *(f"media.limits.{name}" for name in LIMITS),
            "metrics.enabled",
            "metrics.hostname",
            "metrics.port",
            "redis.url",
            "redis.prefix",
            "node.id",
            "node.public_url",
            "node.hostname",
            "node.port",
        ):
            copy(key)
        for key in (
            "appservice.database_opts",
            "bridge.permissions",
            "focus.openid.homeservers",
            "logging",
        ):
            _copy_map(helper, key)

    @property
    def registered(self) -> bool:
        """Whether registration tokens have been generated into this config."""
        return TOKEN_PLACEHOLDER not in (self["appservice.as_token"], self["appservice.hs_token"])

    @property
    def bot_mxid(self) -> str:
        return f"@{self['appservice.bot.username']}:{self['homeserver.domain']}"

    def ghost_localpart(self, name: str) -> str:
        return str(self["appservice.ghost_username_template"]).format(name=name)

    def permissions(self) -> dict[str, PermissionLevel]:
        return {str(k): PermissionLevel(v) for k, v in self["bridge.permissions"].items()}

    def moderation_level(self) -> int | None:
        """``bridge.moderation.level``: None for the room's level to kick, else the number.

        Raises:
            ValueError: neither "kick" nor a whole number.
        """
        value = self.get("bridge.moderation.level", "kick")
        if value == "kick":
            return None
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError('must be "kick" or a power level (a whole number)')
        return value

    def guest_settings(self) -> GuestSettings:
        """``bridge.guests``. Raises ValueError naming the first bad key."""

        def number(name: str, least: float, whole: bool = False) -> float:
            value = self.get(f"bridge.guests.{name}", None)
            kind = int if whole else int | float
            if not isinstance(value, kind) or isinstance(value, bool) or value < least:
                what = "a whole number" if whole else "a number"
                raise ValueError(f"bridge.guests.{name}: must be {what}, {least:g} or more")
            return value

        enabled = self.get("bridge.guests.enabled", None)
        if not isinstance(enabled, bool):
            raise ValueError("bridge.guests.enabled: must be true or false")
        max_hours = number("max_hours", 0.1)
        default_hours = number("default_hours", 0.1)
        if default_hours > max_hours:
            raise ValueError("bridge.guests.default_hours: must not exceed max_hours")
        homeserver_url = self.get("bridge.guests.homeserver_url", "") or ""
        if homeserver_url and not _is_http_url(homeserver_url):
            raise ValueError("bridge.guests.homeserver_url: must be empty or an http(s) URL")
        directory = str(self.get("bridge.guests.element_call_dir", "") or "")
        return GuestSettings(
            enabled=enabled,
            default_hours=default_hours,
            max_hours=max_hours,
            joins_per_minute_per_link=int(number("joins_per_minute_per_link", 0, whole=True)),
            joins_per_minute_per_client=int(number("joins_per_minute_per_client", 0, whole=True)),
            element_call_dir=Path(directory) if directory else GuestSettings.element_call_dir,
            homeserver_url=homeserver_url or str(self["homeserver.address"]),
        )

    def media_settings(self) -> MediaSettings:
        """The SFU's networking settings.

        Raises:
            ValueError: a value is invalid; the message names the key.
        """
        udp_port = self.get("media.udp_port", 0)
        if (
            not isinstance(udp_port, int)
            or isinstance(udp_port, bool)
            or not (udp_port == 0 or 1024 <= udp_port <= 65535)
        ):
            raise ValueError("media.udp_port: must be 1024-65535, or 0 for a port per connection")
        ports = (self.get("media.udp_port_min", 0), self.get("media.udp_port_max", 0))
        if not all(isinstance(port, int) for port in ports):
            raise ValueError("media.udp_port_min/udp_port_max: must be port numbers")
        servers = []
        for index, server in enumerate(self.get("media.ice_servers", None) or []):
            urls = server.get("urls") if isinstance(server, dict) else None
            urls = [urls] if isinstance(urls, str) else urls
            if not urls or not all(
                isinstance(url, str) and url.startswith(("stun:", "turn:", "turns:"))
                for url in urls
            ):
                raise ValueError(f"media.ice_servers[{index}].urls: stun:, turn: or turns: URLs")
            servers.append(
                IceServer(tuple(urls), server.get("username"), server.get("credential"))
            )
        turn = self.turn_secret()
        tracks, connecting = self.limit("tracks_per_participant"), self.limit("connecting")
        connect_timeout = self.limit("connect_timeout")
        publish_bitrate = self.get("media.max_publish_bitrate", 3_000_000)
        if (
            not isinstance(publish_bitrate, int)
            or isinstance(publish_bitrate, bool)
            or publish_bitrate < 100_000
        ):
            raise ValueError("media.max_publish_bitrate: must be a whole number, 100000 or more")
        try:
            return MediaSettings(
                bind_addresses=tuple(str(a) for a in self.get("media.bind_addresses", None) or []),
                public_ip=str(self.get("media.public_ip", "") or "") or None,
                udp_port=udp_port or None,
                udp_port_min=ports[0] or None,
                udp_port_max=ports[1] or None,
                ice_servers=tuple(servers),
                turn=turn,
                max_tracks_per_participant=tracks,
                connect_timeout=connect_timeout,
                max_connecting_transports=connecting,
                max_publish_bitrate=publish_bitrate,
            )
        except ValueError as e:
            raise ValueError(f"media.udp_port_min/udp_port_max: {e}") from e

    def media_workers(self) -> int:
        """``media.workers``: how many worker processes carry the media (0: none, the bridge's
        own process does; ``auto``: one per core this process may run on).

        Raises:
            ValueError: the value is invalid; the message names the key.
        """
        value = self.get("media.workers", "auto")
        if value == "auto":
            value = len(os.sched_getaffinity(0))
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 256:
            raise ValueError("media.workers: must be auto or a whole number 0-256")
        first = self.get("media.udp_port", 0)
        if isinstance(first, int) and first and first + max(value, 1) - 1 > 65535:
            raise ValueError("media.workers: a UDP port each from media.udp_port passes 65535")
        return value

    def redis_settings(self) -> RedisSettings | None:
        """``redis``: None without ``redis.url`` (one machine). Raises ValueError naming
        the key."""
        url = str(self.get("redis.url", "") or "")
        if not url:
            return None
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("redis.url: must start with redis://, rediss:// or unix://")
        prefix = self.get("redis.prefix", "conference-bridge:")
        if not isinstance(prefix, str) or not prefix:
            raise ValueError("redis.prefix: must be a non-empty string")
        return RedisSettings(url, prefix)

    def node_settings(self) -> NodeSettings:
        """``node``, for a media node. Raises ValueError naming the key."""
        node_id = str(self.get("node.id", "") or "")
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", node_id):
            raise ValueError("node.id: a name of letters, digits, '.', '_' or '-'")
        public_url = self.get("node.public_url", "")
        if not _is_http_url(public_url):
            raise ValueError("node.public_url: must be an http:// or https:// URL")
        port = self.get("node.port", None)
        if not _is_port(port):
            raise ValueError("node.port: must be 1-65535")
        return NodeSettings(node_id, str(public_url), str(self.get("node.hostname", "")), port)

    def logging_config(self) -> dict[str, Any]:
        """The ``logging`` section as plain data (for ``logging.config.dictConfig`` in media
        workers)."""
        return dict(json.loads(json.dumps(self["logging"])))

    def drain_grace(self) -> float:
        """``media.drain_grace`` in seconds. Raises ValueError naming the key."""
        value = self.get("media.drain_grace", 30)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise ValueError("media.drain_grace: must be a number of seconds, 0 or more")
        return float(value)

    def turn_secret(self) -> TurnSecret | None:
        """``media.turn_uris`` with ``media.turn_shared_secret``; None when neither is set.

        Raises:
            ValueError: a value is invalid, or one is set without the other; names the key.
        """
        urls = self.get("media.turn_uris", None) or []
        secret = self.get("media.turn_shared_secret", "") or ""
        ttl = self.get("media.turn_ttl", 86400)
        if not isinstance(urls, list) or not all(
            isinstance(url, str) and url.startswith(("turn:", "turns:")) for url in urls
        ):
            raise ValueError("media.turn_uris: a list of turn: or turns: URIs")
        if not isinstance(secret, str):
            raise ValueError("media.turn_shared_secret: must be text")
        if not isinstance(ttl, int) or isinstance(ttl, bool) or not 60 <= ttl <= 7 * 86400:
            raise ValueError("media.turn_ttl: must be 60-604800 seconds")
        if bool(urls) != bool(secret):
            raise ValueError("media.turn_uris and media.turn_shared_secret: set both (or neither)")
        return TurnSecret(tuple(urls), secret, ttl) if urls else None

    def limit(self, name: str) -> int:
        """``media.limits.<name>``, a positive whole number.

        Raises:
            ValueError: it is not; the message names the key.
        """
        value = self.get(f"media.limits.{name}", None)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"media.limits.{name}: must be a whole number, 1 or more")
        return value

    def session_limits(self) -> SessionLimits:
        return SessionLimits(
            per_user=self.limit("sessions_per_user"),
            per_room=self.limit("participants_per_room"),
        )

    def trusted_proxies(self) -> tuple[IPNetwork, ...]:
        """``focus.trusted_proxies``. Raises ValueError naming the bad entry."""
        values = self.get("focus.trusted_proxies", None) or []
        if not isinstance(values, list):
            raise ValueError("must be a list of addresses or networks")
        return parse_networks(values)

    def metrics_settings(self) -> MetricsSettings:
        """The ``metrics`` section. Raises ValueError naming the first bad key."""
        enabled = self.get("metrics.enabled", False)
        hostname = self.get("metrics.hostname", "")
        port = self.get("metrics.port", None)
        if not isinstance(enabled, bool):
            raise ValueError("metrics.enabled: must be true or false")
        if not (isinstance(hostname, str) and hostname.strip()):
            raise ValueError("metrics.hostname: must not be empty")
        if not _is_port(port):
            raise ValueError("metrics.port: must be 1-65535")
        if enabled and port in (self.get("appservice.port", None), self.get("focus.port", None)):
            raise ValueError("metrics.port: must differ from appservice.port and focus.port")
        return MetricsSettings(enabled, hostname, port)

    def focus_limits(self) -> FocusLimits:
        """``focus.limits``. Raises ValueError naming the first bad key."""
        values = {}
        for field in fields(FocusLimits):
            key = f"focus.limits.{field.name}"
            value = self.get(key, field.default)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if isinstance(field.default, float):
                if not (number and value > 0):
                    raise ValueError(f"{key}: must be a number of seconds above 0")
            else:
                least = 1 if field.name.startswith("max_") else 0
                if not (number and isinstance(value, int) and value >= least):
                    raise ValueError(f"{key}: must be a whole number, {least} or more")
            values[field.name] = value
        return FocusLimits(**values)

    def problems(self, *, need_tokens: bool = True) -> list[ConfigProblem]:
        """Every invalid value, each naming its key. Empty when the config is usable."""
        found: list[ConfigProblem] = []

        def check(ok: bool, key: str, message: str) -> None:
            if not ok:
                found.append(ConfigProblem(key, message))

        domain = self.get("homeserver.domain", "")
        check(
            domain != "example.com",
            "homeserver.domain",
            "still the example value 'example.com': set your homeserver's server name",
        )
        check(
            isinstance(domain, str) and bool(_SERVER_NAME.match(domain)),
            "homeserver.domain",
            f"{domain!r} is not a server name",
        )
        for key in ("homeserver.address", "appservice.address"):
            check(_is_http_url(self.get(key, None)), key, "must be an http:// or https:// URL")
        check(_is_port(self.get("appservice.port", None)), "appservice.port", "must be 1-65535")
        database = str(self.get("appservice.database", ""))
        check(
            database.startswith(("sqlite:", "postgres://", "postgresql://")),
            "appservice.database",
            "must start with sqlite: or postgres://",
        )
        for key in ("appservice.id", "appservice.bot.username", "appservice.bot.device_id"):
            check(bool(str(self.get(key, "")).strip()), key, "must not be empty")
        template = str(self.get("appservice.ghost_username_template", ""))
        check(
            "{name}" in template and template.replace("{name}", "") != "",
            "appservice.ghost_username_template",
            "must contain {name} and a fixed part, e.g. _conference_{name}",
        )
        check(
            bool(str(self.get("bridge.command_prefix", "")).strip()),
            "bridge.command_prefix",
            "must not be empty",
        )
        retention = self.get("bridge.history_retention_days", None)
        check(
            isinstance(retention, int) and retention >= 0,
            "bridge.history_retention_days",
            "must be a whole number of days (0 keeps history forever)",
        )
        grace = self.get("bridge.call_end_grace", None)
        check(
            isinstance(grace, int | float) and 0 <= grace <= 3600,
            "bridge.call_end_grace",
            "must be 0-3600 seconds",
        )
        check(
            isinstance(self.get("bridge.call_notices", None), bool),
            "bridge.call_notices",
            "must be true or false",
        )
        try:
            self.moderation_level()
        except ValueError as e:
            found.append(ConfigProblem("bridge.moderation.level", str(e)))
        minutes = self.get("bridge.moderation.removal_minutes", None)
        check(
            isinstance(minutes, int) and not isinstance(minutes, bool) and 0 <= minutes <= 525600,
            "bridge.moderation.removal_minutes",
            "must be 0-525600 minutes",
        )
        try:
            self.guest_settings()
        except ValueError as e:
            key, _, message = str(e).partition(": ")
            found.append(ConfigProblem(key, message))
        found.extend(_permission_problems(self.get("bridge.permissions", None)))
        found.extend(self._dialin_problems())
        try:
            self.media_settings()
            self.session_limits()
            self.media_workers()
            self.drain_grace()
            self.redis_settings()
        except (ValueError, TypeError, KeyError) as e:
            found.append(ConfigProblem("media", str(e)))
        found.extend(self._focus_problems())
        try:
            self.metrics_settings()
        except ValueError as e:
            key, _, message = str(e).partition(": ")
            found.append(ConfigProblem(key, message))
        if need_tokens:
            check(
                self.registered,
                "appservice.as_token",
                "no registration yet: run with --generate-registration first",
            )
        return found

    def _dialin_problems(self) -> list[ConfigProblem]:
        found = []
        if not isinstance(self.get("dialin.enabled", None), bool):
            found.append(ConfigProblem("dialin.enabled", "must be true or false"))
        displayname = self.get("dialin.displayname", None)
        try:
            valid = isinstance(displayname, str) and bool(displayname.format(room="r").strip())
        except (KeyError, IndexError, ValueError):
            valid = False
        if not valid:
            found.append(
                ConfigProblem("dialin.displayname", "must be a non-empty text; {room} is allowed")
            )
        limit = self.get("dialin.max_calls_per_room", None)
        if not (isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0):
            found.append(ConfigProblem("dialin.max_calls_per_room", "must be 0 or more"))
        return found

    def _focus_problems(self) -> list[ConfigProblem]:
        found = []
        if not str(self.get("focus.hostname", "")).strip():
            found.append(ConfigProblem("focus.hostname", "must not be empty"))
        port = self.get("focus.port", None)
        if not _is_port(port):
            found.append(ConfigProblem("focus.port", "must be 1-65535"))
        elif port == self.get("appservice.port", None):
            found.append(ConfigProblem("focus.port", "must differ from appservice.port"))
        public_url = self.get("focus.public_url", "")
        if public_url != "" and not (
            _is_http_url(public_url) and not URL(public_url).query_string
        ):
            found.append(
                ConfigProblem("focus.public_url", "must be empty or an http(s) URL without query")
            )
        lifetime = self.get("focus.token_lifetime", None)
        if not (isinstance(lifetime, int) and 60 <= lifetime <= 86400):
            found.append(ConfigProblem("focus.token_lifetime", "must be 60-86400 seconds"))
        grace = self.get("focus.resume_grace", None)
        if not (
            isinstance(grace, int | float) and not isinstance(grace, bool) and 0 <= grace <= 300
        ):
            found.append(ConfigProblem("focus.resume_grace", "must be 0-300 seconds"))
        policy = self.get("focus.rooms_without_bot", None)
        if policy not in {choice.value for choice in RoomsWithoutBot}:
            choices = ", ".join(choice.value for choice in RoomsWithoutBot)
            found.append(ConfigProblem("focus.rooms_without_bot", f"must be one of {choices}"))
        try:
            self.trusted_proxies()
        except ValueError as e:
            found.append(ConfigProblem("focus.trusted_proxies", str(e)))
        if not isinstance(self.get("focus.homeserver_proxy", None), bool):
            found.append(ConfigProblem("focus.homeserver_proxy", "must be true or false"))
        grace = self.get("focus.delegated_leave_grace", None)
        if not (isinstance(grace, int) and not isinstance(grace, bool) and 1 <= grace <= 3600):
            found.append(ConfigProblem("focus.delegated_leave_grace", "must be 1-3600 seconds"))
        try:
            self.focus_limits()
        except ValueError as e:
            key, _, message = str(e).partition(": ")
            found.append(ConfigProblem(key, message))
        homeservers = self.get("focus.openid.homeservers", None)
        if not isinstance(homeservers, dict):
            return [*found, ConfigProblem("focus.openid.homeservers", "must be a map")]
        for name, url in homeservers.items():
            key = f"focus.openid.homeservers.{name}"
            if not _SERVER_NAME.match(str(name)):
                found.append(ConfigProblem(key, "not a server name"))
            if not _is_http_url(url):
                found.append(ConfigProblem(key, "must be an http:// or https:// base URL"))
        return found

    def validate(self, *, need_tokens: bool = True) -> None:
        problems = self.problems(need_tokens=need_tokens)
        if problems:
            raise InvalidConfigError(problems)


def _copy_map(helper: ConfigUpdateHelper, key: str) -> None:
    """Replace a map of the base with the admin's, keeping the base's trailing comment.

    ruamel.yaml stores the comment above the key *after* a map on that map's last item, so a
    plain replacement would drop the next key's comment from the upgraded file.
    """
    if key not in helper.source:
        return
    base_map = helper.base[key]
    trailing = base_map.ca.items.get(next(reversed(base_map)), None) if base_map else None
    replacement = CommentedMap(helper.source[key].items())
    if trailing is not None and replacement:
        replacement.ca.items[next(reversed(replacement))] = trailing
    helper.base[key] = replacement


def _is_http_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        url = URL(value)
    except ValueError:
        return False
    return url.scheme in ("http", "https") and bool(url.host)


def _is_port(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value < 65536


def _permission_problems(permissions: Any) -> list[ConfigProblem]:
    if not isinstance(permissions, dict) or not permissions:
        return [ConfigProblem("bridge.permissions", "must map user IDs or server names to levels")]
    levels = ", ".join(level.value for level in PermissionLevel)
    found = []
    for subject, level in permissions.items():
        key = f"bridge.permissions.{subject}"
        subject = str(subject)
        if not (subject == "*" or _USER_ID.match(subject) or _SERVER_NAME.match(subject)):
            found.append(ConfigProblem(key, "not a user ID, server name or '*'"))
        if level not in {lvl.value for lvl in PermissionLevel}:
            found.append(ConfigProblem(key, f"unknown level {level!r}; use one of {levels}"))
    return found
