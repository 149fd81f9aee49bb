"""The appservice registration file the homeserver admin installs.

Modelled on mautrix's bridge registration, plus the MSC3202 flag the bridge needs for device
lists and one-time-key counts (end-to-end encrypted calls exchange keys over to-device), and,
with ``focus.homeserver_proxy``, the claim on the homeserver's ``rtc/livekit`` routes
(MSC4512) with the MSC4502 ``is_joined`` scope. Synapse reads those only under their
``io.element`` names.
"""

from __future__ import annotations

from typing import Any
import re
import secrets

from ruamel.yaml import YAML

from .config import Config
from .focus.proxied import PROXY_PREFIX

IS_JOINED_SCOPE = "urn:matrix:client:io.element.msc4502:rooms:is_joined"


def _localpart_regex(localpart: str, domain: str) -> str:
    return f"@{localpart}:{re.escape(domain)}"


def build_registration(config: Config) -> dict[str, Any]:
    """The registration dict for the tokens currently in ``config``."""
    domain = str(config["homeserver.domain"])
    bot_pattern = re.escape(config["appservice.bot.username"])
    ghost_pattern = re.escape(config.ghost_localpart("\0")).replace(re.escape("\0"), ".+")
    registration: dict[str, Any] = {
        "id": config["appservice.id"],
        "url": config["appservice.address"],
        "as_token": config["appservice.as_token"],
        "hs_token": config["appservice.hs_token"],
        "sender_localpart": config["appservice.bot.username"],
        "rate_limited": False,
        "namespaces": {
            "users": [
                {"exclusive": True, "regex": _localpart_regex(bot_pattern, domain)},
                {"exclusive": True, "regex": _localpart_regex(ghost_pattern, domain)},
            ],
            "aliases": [],
            "rooms": [],
        },
        "receive_ephemeral": True,
        "de.sorunome.msc2409.push_ephemeral": True,
        "org.matrix.msc3202": True,
    }
    if config["focus.homeserver_proxy"]:
        registration["io.element.msc4502.scopes"] = [IS_JOINED_SCOPE]
        registration["io.element.msc4512.proxy_prefix"] = PROXY_PREFIX
        # Synapse appends the request's path as it is.
        registration["io.element.msc4512.proxy_url"] = str(config["appservice.address"]).rstrip(
            "/"
        )
    return registration


def generate_registration(config: Config, path: str) -> None:
    """Create fresh tokens, store them in the config file and write the registration."""
    config["appservice.as_token"] = secrets.token_urlsafe(48)
    config["appservice.hs_token"] = secrets.token_urlsafe(48)
    config.save()
    yaml = YAML()
    yaml.indent(mapping=4, sequence=4, offset=2)
    with open(path, "w", encoding="utf-8") as stream:
        yaml.dump(build_registration(config), stream)
