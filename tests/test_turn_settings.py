"""TURN shared-secret settings: the credentials' scheme, and the config keys that set them."""

from __future__ import annotations

from pathlib import Path

import pytest

from sfu import IceServer, MediaSettings, TurnSecret

from .support.configs import example_config_with

URL = "turn:turn.example.org:3478?transport=udp"


def test_credentials_follow_coturns_rest_scheme() -> None:
    turn = TurnSecret((URL,), "s3cret", ttl=3600)
    server = turn.ice_server("@alice:example.org", now=1_700_000_000.7)
    # The expiry first (coturn reads it up to the first colon), then the user.
    assert server == IceServer(
        (URL,), "1700003600:@alice:example.org", "DwTxSrYoQgbdbUzNhDKfrCGmqbE="
    )
    assert "s3cret" not in repr(turn)


def test_each_user_and_moment_gets_its_own_credentials() -> None:
    fixed = IceServer(("stun:stun.example.org",))
    settings = MediaSettings(ice_servers=(fixed,), turn=TurnSecret((URL,), "s3cret"))
    first, minted = settings.ice_servers_for("@alice:example.org", 1000.0)
    assert first == fixed
    assert minted.username == "87400:@alice:example.org"
    other = settings.ice_servers_for("@bob:example.org", 1000.0)[1]
    later = settings.ice_servers_for("@alice:example.org", 2000.0)[1]
    assert len({minted.credential, other.credential, later.credential}) == 3
    assert MediaSettings(ice_servers=(fixed,)).ice_servers_for("@a:b", 0.0) == (fixed,)


@pytest.mark.parametrize(("urls", "secret"), [((), "s"), (("stun:x",), "s"), ((URL,), "")])
def test_incomplete_turn_settings_are_refused(urls: tuple[str, ...], secret: str) -> None:
    with pytest.raises(ValueError):
        TurnSecret(urls, secret)


def test_config_keys_make_turn_settings(tmp_path: Path) -> None:
    config = example_config_with(
        tmp_path,
        {"media.turn_uris": [URL], "media.turn_shared_secret": "s3cret", "media.turn_ttl": 600},
    )
    assert config.media_settings().turn == TurnSecret((URL,), "s3cret", 600)
    assert example_config_with(tmp_path, {}).media_settings().turn is None


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"media.turn_uris": [URL]}, "set both"),
        ({"media.turn_shared_secret": "s3cret"}, "set both"),
        ({"media.turn_uris": ["stun:x"], "media.turn_shared_secret": "s"}, "media.turn_uris"),
        ({"media.turn_uris": URL, "media.turn_shared_secret": "s"}, "media.turn_uris"),
        ({"media.turn_ttl": 10}, "media.turn_ttl: must be 60-604800 seconds"),
    ],
)
def test_bad_turn_config_names_the_key(
    tmp_path: Path, values: dict[str, object], message: str
) -> None:
    problems = example_config_with(
        tmp_path, {"homeserver.domain": "example.org", **values}
    ).problems(need_tokens=False)
    assert [problem.key for problem in problems] == ["media"]
    assert message in str(problems[0])
