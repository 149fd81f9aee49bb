"""Config upgrade in place, validation that names the key, and the CLI's failure exits."""

from __future__ import annotations

from pathlib import Path
import os
import socket
import sqlite3

from ruamel.yaml import YAML

from bridge import resources
from bridge.config import Config
from bridge.db.upgrade import VERSION_TABLE
from demo.bridge_process import edit_config, run_cli
from demo.ports import free_port, free_udp_port

from .support.configs import example_config_with


def write_old_config(path: Path) -> None:
    """An admin's config from an older release: one key missing, values of their own."""
    text = resources.example_config()
    text = text.replace(
        "    # How many days of call history are kept; 0 keeps it forever.\n"
        "    history_retention_days: 365\n",
        "",
    )
    assert "history_retention_days" not in text
    path.write_text(text)
    edit_config(
        path,
        {
            "homeserver.domain": "example.org",
            "appservice.port": 31000,
            "bridge.permissions": {"example.org": "admin", "@eve:elsewhere.net": "none"},
            "media.bind_addresses": ["192.0.2.10"],
            "media.ice_servers": [{"urls": ["turn:turn.example.org"], "username": "u"}],
        },
    )


def test_upgrade_keeps_values_and_adds_new_keys_with_comments(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    write_old_config(path)
    config = Config(str(path))
    config.load()
    config.update(save=True)

    text = path.read_text()
    assert "# How many days of call history are kept; 0 keeps it forever.\n" in text
    reloaded = YAML().load(text)
    assert reloaded["bridge"]["history_retention_days"] == 365
    assert reloaded["homeserver"]["domain"] == "example.org"
    assert reloaded["appservice"]["port"] == 31000
    assert list(reloaded["media"]["bind_addresses"]) == ["192.0.2.10"]
    assert reloaded["media"]["ice_servers"][0]["urls"] == ["turn:turn.example.org"]
    assert dict(reloaded["bridge"]["permissions"]) == {
        "example.org": "admin",
        "@eve:elsewhere.net": "none",
    }
    # Comments of keys that follow a replaced map survive too.
    assert "    # The registration ID; must be unique" in text
    assert "    # How many days of call history" in text


def test_configs_from_before_the_single_port_keep_their_range(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    text = resources.example_config()
    start = text.index("    # The one UDP port all media uses")
    end = text.index("    # A range of UDP ports")
    path.write_text(text[:start] + text[end:])
    edit_config(path, {"media.udp_port_min": 50000, "media.udp_port_max": 50009})
    config = Config(str(path))
    config.load()
    config.update(save=True)
    assert "    # The one UDP port all media uses" in path.read_text()
    settings = config.media_settings()
    assert (settings.udp_port, settings.udp_port_min) == (29335, 50000)
    assert not settings.single_port

    edit_config(path, {"media.udp_port_min": 0, "media.udp_port_max": 0})
    config.load()
    assert config.media_settings().single_port

    edit_config(path, {"media.udp_port": 80})
    config.load()
    assert any("media.udp_port: must be 1024-65535" in str(p) for p in config.problems())


def test_validation_names_every_bad_key(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(resources.example_config())
    edit_config(
        path,
        {
            "appservice.port": 70000,
            "appservice.database": "mysql://nope",
            "homeserver.address": "localhost:8008",
            "bridge.permissions": {"example.org": "superuser", "not a server": "user"},
        },
    )
    config = Config(str(path))
    config.load()
    keys = {problem.key for problem in config.problems()}
    assert keys == {
        "homeserver.domain",
        "homeserver.address",
        "appservice.port",
        "appservice.database",
        "appservice.as_token",
        "bridge.permissions.example.org",
        "bridge.permissions.not a server",
    }


def test_moderation_level_is_the_rooms_kick_level_or_a_number(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(resources.example_config())
    config = Config(str(path))
    config.load()
    assert config.moderation_level() is None
    edit_config(path, {"bridge.moderation.level": 75})
    config.load()
    assert config.moderation_level() == 75
    edit_config(path, {"bridge.moderation.level": "mods", "bridge.moderation.removal_minutes": -1})
    config.load()
    problems = {problem.key: problem.message for problem in config.problems()}
    assert "kick" in problems["bridge.moderation.level"]
    assert "bridge.moderation.removal_minutes" in problems


def test_first_run_writes_config_and_exits_non_zero(tmp_path: Path) -> None:
    result = run_cli("-c", "config.yaml", cwd=tmp_path)
    assert result.returncode != 0
    assert "Wrote a new config to config.yaml" in result.stderr
    assert (tmp_path / "config.yaml").read_text() == resources.example_config()


def test_bad_config_exits_with_the_key(tmp_path: Path) -> None:
    run_cli("-c", "config.yaml", cwd=tmp_path)
    edit_config(
        tmp_path / "config.yaml", {"homeserver.domain": "example.org", "appservice.port": 0}
    )
    result = run_cli("-g", "-c", "config.yaml", cwd=tmp_path)
    assert result.returncode == 11
    assert "appservice.port: must be 1-65535" in result.stderr
    assert not (tmp_path / "registration.yaml").exists()

    edit_config(tmp_path / "config.yaml", {"appservice.port": 29333})
    result = run_cli("-c", "config.yaml", cwd=tmp_path)
    assert result.returncode == 11
    assert "appservice.as_token: no registration yet" in result.stderr


def registered_config(tmp_path: Path, database: str) -> None:
    run_cli("-c", "config.yaml", cwd=tmp_path)
    edit_config(
        tmp_path / "config.yaml",
        {
            "homeserver.domain": "example.org",
            "appservice.database": database,
            "media.bind_addresses": ["127.0.0.1"],
            "media.udp_port": free_udp_port(),
        },
    )
    assert run_cli("-g", "-c", "config.yaml", cwd=tmp_path).returncode == 0


def test_unreachable_database_exits_with_the_key(tmp_path: Path) -> None:
    registered_config(tmp_path, "postgres://postgres@127.0.0.1:1/nothing")
    result = run_cli("-c", "config.yaml", cwd=tmp_path)
    assert result.returncode == 13
    assert "appservice.database: cannot connect to the database" in result.stderr


def test_unreachable_homeserver_exits_with_the_key(tmp_path: Path) -> None:
    """Nothing listens on the port: the bridge gives up on its own instead of retrying for
    minutes, and names the key to check."""
    registered_config(tmp_path, "sqlite:bridge.db")
    closed = f"http://127.0.0.1:{free_port()}"
    edit_config(
        tmp_path / "config.yaml", {"homeserver.address": closed, "appservice.port": free_port()}
    )
    result = run_cli("-c", "config.yaml", cwd=tmp_path)
    assert result.returncode == 13, result.stderr
    assert f"homeserver.address: cannot reach the homeserver at {closed}" in result.stderr


def test_media_port_taken_exits_with_the_key(tmp_path: Path) -> None:
    registered_config(tmp_path, "sqlite:bridge.db")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other_program:
        other_program.bind(("127.0.0.1", 0))
        port = other_program.getsockname()[1]
        edit_config(tmp_path / "config.yaml", {"media.udp_port": port})
        result = run_cli("-c", "config.yaml", cwd=tmp_path)
    assert result.returncode == 13, result.stderr
    assert f"media.udp_port: cannot bind UDP port {port} on 127.0.0.1" in result.stderr


def test_appservice_port_taken_exits_with_the_key(tmp_path: Path) -> None:
    registered_config(tmp_path, "sqlite:bridge.db")
    with socket.socket() as other_program:
        other_program.bind(("127.0.0.1", 0))
        other_program.listen()
        port = other_program.getsockname()[1]
        edit_config(
            tmp_path / "config.yaml", {"appservice.hostname": "127.0.0.1", "appservice.port": port}
        )
        result = run_cli("-c", "config.yaml", cwd=tmp_path)
    assert result.returncode == 13, result.stderr
    assert f"appservice.port: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_database_newer_than_the_bridge_is_refused(tmp_path: Path) -> None:
    registered_config(tmp_path, "sqlite:bridge.db")
    with sqlite3.connect(tmp_path / "bridge.db") as conn:
        conn.execute(f"CREATE TABLE {VERSION_TABLE} (version INTEGER PRIMARY KEY)")
        conn.execute(f"INSERT INTO {VERSION_TABLE} VALUES (999)")
    result = run_cli("-c", "config.yaml", cwd=tmp_path)
    assert result.returncode == 13
    assert "appservice.database: Unsupported bridge database schema version v999" in result.stderr


def test_max_publish_bitrate_reaches_the_sfu_and_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(resources.example_config())
    config = Config(str(path))
    config.load()
    assert config.media_settings().max_publish_bitrate == 3_000_000
    edit_config(path, {"media.max_publish_bitrate": 5_000_000})
    config.load()
    assert config.media_settings().max_publish_bitrate == 5_000_000
    edit_config(path, {"media.max_publish_bitrate": 5_000})
    config.load()
    problems = [str(problem) for problem in config.problems(need_tokens=False)]
    assert any("media.max_publish_bitrate" in problem for problem in problems), problems


def test_media_workers_default_to_one_per_core_and_are_checked(tmp_path: Path) -> None:
    cores = len(os.sched_getaffinity(0))
    assert example_config_with(tmp_path, {}).media_workers() == cores
    assert example_config_with(tmp_path, {"media.workers": 0}).media_workers() == 0
    assert example_config_with(tmp_path, {}).redis_settings() is None
    for key, bad in (
        ("media.workers", "many"),
        ("media.workers", -1),
        ("media.workers", True),
        ("media.drain_grace", -5),
        ("redis.url", "http://redis"),
    ):
        problems = example_config_with(tmp_path, {key: bad}).problems(need_tokens=False)
        assert any(key in str(problem) for problem in problems), (key, problems)
    crowded = example_config_with(tmp_path, {"media.udp_port": 65535, "media.workers": 2})
    assert any("media.workers" in str(p) for p in crowded.problems(need_tokens=False))
