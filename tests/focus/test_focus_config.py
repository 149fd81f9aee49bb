"""The ``focus:`` config section: validation naming the key, upgrades, derived URLs."""

from __future__ import annotations

from pathlib import Path

from ruamel.yaml import YAML
from yarl import URL

from bridge import resources
from bridge.config import Config
from bridge.focus.limits import FocusLimits
from bridge.focus.service import openid_servers, signalling_url
from bridge.registration import IS_JOINED_SCOPE, build_registration
from demo.bridge_process import edit_config


def load(path: Path, values: dict[str, object]) -> Config:
    path.write_text(resources.example_config())
    edit_config(path, {"homeserver.domain": "example.org", **values})
    config = Config(str(path))
    config.load()
    return config


def focus_problems(config: Config) -> dict[str, str]:
    return {p.key: p.message for p in config.problems() if p.key.startswith("focus.")}


def test_the_example_focus_section_is_valid(tmp_path: Path) -> None:
    assert focus_problems(load(tmp_path / "config.yaml", {})) == {}


def test_bad_focus_values_are_named(tmp_path: Path) -> None:
    config = load(
        tmp_path / "config.yaml",
        {
            "focus.hostname": "",
            "focus.port": 29333,
            "focus.public_url": "https://rtc.example.org/?x=1",
            "focus.token_lifetime": 10,
            "focus.resume_grace": -1,
            "focus.rooms_without_bot": "allow",
            "focus.openid.homeservers": {"bad name!": "ftp://x", "ok.example": "http://hs:8008"},
        },
    )
    problems = focus_problems(config)
    assert set(problems) == {
        "focus.hostname",
        "focus.port",
        "focus.public_url",
        "focus.token_lifetime",
        "focus.resume_grace",
        "focus.rooms_without_bot",
        "focus.openid.homeservers.bad name!",
    }
    assert problems["focus.port"] == "must differ from appservice.port"
    assert "deny, bridge_permissions" in problems["focus.rooms_without_bot"]


def test_upgrade_adds_the_focus_section_and_keeps_the_admins_map(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    config = load(path, {"focus.openid.homeservers": {"corp.example": "http://10.0.0.5:8008"}})
    config.update(save=True)
    text = path.read_text()
    assert "    # Where the focus listener binds." in text
    assert "        # Base URLs of homeservers by server name" in text
    assert "\n# Python logging configuration" in text
    assert dict(YAML().load(text)["focus"]["openid"]["homeservers"]) == {
        "corp.example": "http://10.0.0.5:8008"
    }

    old = resources.example_config().split("\nfocus:\n")[0] + "\n"
    path.write_text(old)
    config = Config(str(path))
    config.load()
    config.update(save=True)
    upgraded = YAML().load(path.read_text())
    assert upgraded["focus"]["rooms_without_bot"] == "deny"
    assert upgraded["focus"]["resume_grace"] == 15
    assert "rooms_without_bot: deny" in path.read_text()


def test_signalling_url_follows_the_public_url() -> None:
    assert signalling_url("https://rtc.example.org/conf/", "127.0.0.1", 1) == (
        "wss://rtc.example.org/conf"
    )
    assert signalling_url("http://127.0.0.1:8080", "127.0.0.1", 1) == "ws://127.0.0.1:8080"
    assert signalling_url("", "127.0.0.1", 29334) == "ws://127.0.0.1:29334"


def test_own_homeserver_is_reached_at_its_address_unless_mapped(tmp_path: Path) -> None:
    config = load(tmp_path / "config.yaml", {"homeserver.address": "http://127.0.0.1:8008"})
    assert openid_servers(config) == {"example.org": URL("http://127.0.0.1:8008")}
    config = load(
        tmp_path / "config.yaml",
        {"focus.openid.homeservers": {"example.org": "https://matrix.example.org"}},
    )
    assert openid_servers(config) == {"example.org": URL("https://matrix.example.org")}


def test_focus_limits_are_read_validated_and_added_by_upgrades(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    assert load(path, {}).focus_limits() == FocusLimits()
    config = load(
        path,
        {
            "focus.trusted_proxies": ["10.0.0.0/8", "::1"],
            "focus.limits.token_requests_per_minute_per_client": 0,
            "focus.limits.header_timeout": 2.5,
        },
    )
    assert [str(net) for net in config.trusted_proxies()] == ["10.0.0.0/8", "::1/128"]
    assert config.focus_limits().token_requests_per_minute_per_client == 0
    assert config.focus_limits().header_timeout == 2.5
    for key, value, says in [
        ("focus.limits.header_timeout", 0, "seconds above 0"),
        ("focus.limits.body_timeout", "ten", "seconds above 0"),
        ("focus.limits.max_connections", 0, "1 or more"),
        ("focus.limits.token_requests_per_minute_per_server", -1, "0 or more"),
        ("focus.limits.max_connections_per_ip", True, "1 or more"),
        ("focus.trusted_proxies", ["proxy.example"], "'proxy.example'"),
    ]:
        assert says in focus_problems(load(path, {key: value}))[key]

    without = resources.example_config().replace("    trusted_proxies: []\n", "")
    path.write_text(without.split("    limits:\n")[0] + "\n")
    config = Config(str(path))
    config.load()
    config.update(save=True)
    text = path.read_text()
    assert "max_connections_per_ip: 100" in text
    assert "# Seconds a connection may take to send a request's headers" in text
    assert YAML().load(text)["focus"]["trusted_proxies"] == []


def test_homeserver_route_and_delegation_keys_are_validated_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    config = load(path, {})
    assert config["focus.homeserver_proxy"] is True
    assert config["focus.delegated_leave_grace"] == 60
    problems = focus_problems(
        load(path, {"focus.homeserver_proxy": "yes", "focus.delegated_leave_grace": 0})
    )
    assert problems == {
        "focus.homeserver_proxy": "must be true or false",
        "focus.delegated_leave_grace": "must be 1-3600 seconds",
    }

    # A config from before these keys gets them with their comments; set values stay.
    old = resources.example_config()
    old = old.split("    # Let the homeserver forward")[0] + "    limits: {}\n"
    path.write_text(old)
    config = Config(str(path))
    config.load()
    config.update(save=True)
    text = path.read_text()
    assert "homeserver_proxy: true" in text
    assert "    # After a restart of the bridge, how long" in text
    config = load(path, {"focus.homeserver_proxy": False, "focus.delegated_leave_grace": 5})
    config.update(save=True)
    kept = YAML().load(path.read_text())["focus"]
    assert (kept["homeserver_proxy"], kept["delegated_leave_grace"]) == (False, 5)


def test_the_registration_claims_the_rtc_routes_only_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    claimed = build_registration(load(path, {"appservice.address": "http://10.0.0.2:29333/"}))
    assert claimed["io.element.msc4512.proxy_prefix"] == "rtc/livekit"
    assert claimed["io.element.msc4512.proxy_url"] == "http://10.0.0.2:29333"
    assert claimed["io.element.msc4502.scopes"] == [IS_JOINED_SCOPE]
    assert not {"proxy_prefix", "proxy_url", "scopes"} & set(claimed)  # Synapse ignores these
    plain = build_registration(load(path, {"focus.homeserver_proxy": False}))
    assert not [key for key in plain if "msc4512" in key or "msc4502" in key]
