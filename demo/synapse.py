"""A real, throwaway Synapse homeserver on loopback (for the demo, the benchmarks and the
integration tests).

Synapse comes from PyPI (the ``demo`` extra). The config is written directly (generating one
costs seconds), binds 127.0.0.1 only, and makes no outbound connections: no key servers, no
stats, and no federation unless a test certificate authority is given (then it federates with
other such Synapses on loopback, see :mod:`demo.federation`). Rate limits are lifted so that
scripted clients are not throttled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
import base64
import hashlib
import hmac
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request

from ruamel.yaml import YAML

from .federation import LOOPBACK, TestAuthority
from .ports import free_port

SERVER_NAME = "localhost"
START_TIMEOUT_S = 60.0
_UNLIMITED = {"per_second": 100000, "burst_count": 1000000}
_RATE_LIMITS = (
    "rc_message",
    "rc_registration",
    "rc_3pid_validation",
    "rc_admin_redaction",
    "rc_key_requests",
    "rc_room_creation",
    "rc_delayed_event_mgmt",
    "rc_media_create",
    "rc_reports",
    "rc_user_directory",
    "rc_profile",
    "rc_joins_per_room",
)


@dataclass(frozen=True)
class MatrixUser:
    user_id: str
    access_token: str
    device_id: str


class Synapse:
    def __init__(self, workdir: Path, federation: TestAuthority | None = None) -> None:
        """``federation``: the authority whose certificate this server's federation listener
        gets and whose certificates it trusts; its server name is then ``127.0.0.1:<port>``
        of that listener."""
        self.workdir = workdir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.federation = federation
        self.federation_port = free_port() if federation else 0
        self.server_name = (
            f"{LOOPBACK}:{self.federation_port}" if federation is not None else SERVER_NAME
        )
        self.appservice_files: list[Path] = []
        self.focus_url = ""
        self._secret = secrets.token_hex(16)
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The running process's id (benchmarks pin it to a core and read its CPU time)."""
        if self._process is None:
            raise RuntimeError("not running")
        return self._process.pid

    @property
    def log_path(self) -> Path:
        return self.workdir / "homeserver.log"

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        seed = base64.b64encode(os.urandom(32)).decode().rstrip("=")
        (self.workdir / "signing.key").write_text(f"ed25519 a_test {seed}\n")
        log_config = {
            "version": 1,
            "formatters": {"f": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
            "handlers": {
                "file": {
                    "class": "logging.FileHandler",
                    "formatter": "f",
                    "filename": str(self.log_path),
                }
            },
            "root": {"level": "INFO", "handlers": ["file"]},
            "disable_existing_loggers": False,
        }
        config = {
            "server_name": self.server_name,
            "pid_file": str(self.workdir / "homeserver.pid"),
            "listeners": self._listeners(),
            "database": {
                "name": "sqlite3",
                "args": {"database": str(self.workdir / "homeserver.db")},
            },
            "log_config": str(self.workdir / "log.yaml"),
            "media_store_path": str(self.workdir / "media"),
            "signing_key_path": str(self.workdir / "signing.key"),
            "registration_shared_secret": self._secret,
            "macaroon_secret_key": secrets.token_hex(16),
            "form_secret": secrets.token_hex(16),
            "report_stats": False,
            "enable_registration": False,
            "bcrypt_rounds": 4,
            "trusted_key_servers": [],
            "suppress_key_server_warning": True,
            **self._federation_config(),
            "url_preview_enabled": False,
            "app_service_config_files": [str(path) for path in self.appservice_files],
            "experimental_features": {
                "msc2409_to_device_messages_enabled": True,
                "msc3202_transaction_extensions": True,
                "msc4143_enabled": True,
                # The bridge's rtc/livekit routes, forwarded to it (MSC4512), and the
                # is_joined scope its registration claims (MSC4502).
                "msc4512_enabled": True,
                "msc4502_enabled": True,
            },
            # Delayed events (MSC4140): MatrixRTC clients schedule their leave with them.
            "max_event_delay_duration": "24h",
            # The focus, announced as the README tells admins to (/rtc/transports).
            "matrix_rtc": {
                "transports": (
                    [
                        {
                            "type": "livekit",
                            "url": "ws" + self.focus_url.removeprefix("http"),
                            "livekit_service_url": self.focus_url,
                        }
                    ]
                    if self.focus_url
                    else []
                )
            },
            "rc_login": {
                "address": _UNLIMITED,
                "account": _UNLIMITED,
                "failed_attempts": _UNLIMITED,
            },
            "rc_joins": {"local": _UNLIMITED, "remote": _UNLIMITED},
            "rc_invites": {
                "per_room": _UNLIMITED,
                "per_user": _UNLIMITED,
                "per_issuer": _UNLIMITED,
            },
            "rc_presence": {"per_user": _UNLIMITED},
            **{key: _UNLIMITED for key in _RATE_LIMITS},
        }
        yaml = YAML()
        with open(self.workdir / "log.yaml", "w") as stream:
            yaml.dump(log_config, stream)
        path = self.workdir / "homeserver.yaml"
        with open(path, "w") as stream:
            yaml.dump(config, stream)
        return path

    @property
    def federation_url(self) -> str:
        """The federation listener (HTTPS, the test authority's certificate)."""
        if self.federation is None:
            raise RuntimeError("this Synapse does not federate")
        return f"https://{LOOPBACK}:{self.federation_port}"

    def _federation_config(self) -> dict:
        if self.federation is None:
            return {"federation_domain_whitelist": []}
        tls = self.federation.issue(f"synapse-{self.federation_port}")
        return {
            "tls_certificate_path": str(tls.certificate),
            "tls_private_key_path": str(tls.private_key),
            "federation_custom_ca_list": [str(self.federation.certificate_path)],
            # The other homeservers are on loopback, which Synapse refuses to contact by
            # default (its guard against request forgery); for federation only, and only
            # loopback exists here. (ip_range_whitelist does not help: IP-literal server
            # names are checked against the blocklist alone.)
            "federation_ip_range_blacklist": [],
        }

    def _listeners(self) -> list[dict]:
        client = {
            "port": self.port,
            "bind_addresses": [LOOPBACK],
            "type": "http",
            "tls": False,
            "x_forwarded": False,
            "resources": [{"names": ["client", "openid"], "compress": False}],
        }
        if self.federation is None:
            return [client]
        federation = {
            "port": self.federation_port,
            "bind_addresses": [LOOPBACK],
            "type": "http",
            "tls": True,
            "x_forwarded": False,
            "resources": [{"names": ["federation", "openid"], "compress": False}],
        }
        return [client, federation]

    def start(self, appservice_files: list[Path], focus_url: str = "") -> None:
        self.launch(appservice_files, focus_url)
        self.wait_until_ready()

    def launch(self, appservice_files: list[Path], focus_url: str = "") -> None:
        """Start the process without waiting for it (so that several start in parallel)."""
        self.appservice_files = appservice_files
        self.focus_url = focus_url
        config_path = self.write_config()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "synapse.app.homeserver", "-c", str(config_path)],
            cwd=self.workdir,
            stdout=open(self.workdir / "stdout.log", "wb"),  # noqa: SIM115 - lives with the process
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_until_ready(self) -> None:
        assert self._process is not None, "not launched"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"Synapse exited early; see {self.workdir / 'stdout.log'}")
            try:
                self.request("GET", "/_matrix/client/versions")
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Synapse did not answer within {START_TIMEOUT_S} s")

    def stop(self) -> None:
        if self._process and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait()
        self._process = None

    def request(
        self, method: str, path: str, body: dict | None = None, token: str | None = None
    ) -> dict:
        """A blocking client-server API call; raises urllib.error.HTTPError on errors."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"{}")

    def openid_token(self, user: MatrixUser) -> dict:
        """A Matrix OpenID token for ``user``, as a client gets one for a focus."""
        return self.request(
            "POST",
            f"/_matrix/client/v3/user/{user.user_id}/openid/request_token",
            {},
            token=user.access_token,
        )

    def expire_openid_token(self, access_token: str) -> None:
        """Make an OpenID token expired now; Synapse gives no way to issue short-lived ones."""
        with sqlite3.connect(self.workdir / "homeserver.db") as db:
            db.execute(
                "UPDATE open_id_tokens SET ts_valid_until_ms = 0 WHERE token = ?",
                (access_token,),
            )

    def register_user(self, localpart: str, *, admin: bool = False) -> MatrixUser:
        """Create a user with the shared-secret admin API and return its login."""
        nonce = self.request("GET", "/_synapse/admin/v1/register")["nonce"]
        password = secrets.token_hex(8)
        mac = hmac.new(self._secret.encode(), digestmod=hashlib.sha1)
        mac.update(
            f"{nonce}\0{localpart}\0{password}\0{'admin' if admin else 'notadmin'}".encode()
        )
        result = self.request(
            "POST",
            "/_synapse/admin/v1/register",
            {
                "nonce": nonce,
                "username": localpart,
                "password": password,
                "admin": admin,
                "mac": mac.hexdigest(),
            },
        )
        return MatrixUser(result["user_id"], result["access_token"], result["device_id"])
