"""The bridge as an admin runs it: configured and registered through its CLI, then started
as its own process."""

from __future__ import annotations

from typing import Any
from pathlib import Path
import os
import resource
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from ruamel.yaml import YAML

from .ports import free_port, free_udp_port

READY_TIMEOUT_S = 60.0


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def edit_config(path: Path, values: dict[str, Any]) -> None:
    """Set dotted keys in a YAML file, keeping its comments (as an admin's editor would)."""
    yaml = YAML()
    data = yaml.load(path.read_text())
    for dotted, value in values.items():
        *parents, leaf = dotted.split(".")
        node = data
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    with open(path, "w") as stream:
        yaml.dump(data, stream)


class BridgeProcess:
    """One bridge home directory: config.yaml, registration.yaml and a running process."""

    def __init__(
        self, workdir: Path, homeserver_url: str, domain: str, *, ca_file: Path | None = None
    ) -> None:
        """``ca_file``: the certificate authorities the bridge's HTTPS clients trust instead of
        the system's (``SSL_CERT_FILE``), for homeservers with test certificates."""
        self.workdir = workdir
        self.ca_file = ca_file
        self.port = free_port()
        self.focus_port = free_port()
        self.focus_host = "127.0.0.1"
        """Where the focus listener is reached (its ``focus.hostname``)."""
        self.metrics_port = free_port()
        self.config_path = workdir / "config.yaml"
        self.registration_path = workdir / "registration.yaml"
        self.homeserver_url = homeserver_url
        self.domain = domain
        self.database_url = ""
        """The database set with :meth:`use_database`."""
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file = workdir / "bridge.log"

    @property
    def pid(self) -> int:
        """The running process's id (benchmarks pin it to a core and read its CPU time)."""
        if self._process is None:
            raise RuntimeError("not running")
        return self._process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def focus_url(self) -> str:
        """The focus listener, also configured as its public URL (no reverse proxy here)."""
        return f"http://{self.focus_host}:{self.focus_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def configure(self, permissions: dict[str, str]) -> None:
        """Follow the README: first run writes a config, edit it, generate the registration."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        first = run_cli("-c", str(self.config_path), cwd=self.workdir)
        assert first.returncode != 0, first
        assert "Wrote a new config" in first.stderr
        edit_config(
            self.config_path,
            {
                "homeserver.address": self.homeserver_url,
                "homeserver.domain": self.domain,
                "appservice.address": self.url,
                "appservice.port": self.port,
                "bridge.permissions": permissions,
                "focus.port": self.focus_port,
                "focus.public_url": self.focus_url,
                "media.bind_addresses": ["127.0.0.1"],
                "metrics.enabled": True,
                "metrics.port": self.metrics_port,
                # A port for each media worker (media.workers: auto, one per core).
                "media.udp_port": free_udp_port(len(os.sched_getaffinity(0))),
                "bridge.call_end_grace": 1,
                # Clients in tests resume at once; a dropped one need not stay 15 s.
                "focus.resume_grace": 3,
                # Loopback connects at once; abandoned connections need not wait 20 s.
                "media.limits.connect_timeout": 8,
            },
        )
        generated = run_cli(
            "-g", "-c", str(self.config_path), "-r", str(self.registration_path), cwd=self.workdir
        )
        assert generated.returncode == 0, generated.stderr
        assert self.registration_path.exists()

    def use_database(self, url: str) -> None:
        edit_config(self.config_path, {"appservice.database": url})
        self.database_url = url

    def start(self, *, open_files: int | None = None) -> None:
        """``open_files`` starts the process with that soft limit on file descriptors (as
        a service manager might), below the hard limit it keeps."""
        assert self._process is None, "already running"

        def limit_open_files() -> None:
            if open_files is not None:
                _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
                resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, hard))

        self._process = subprocess.Popen(
            [sys.executable, "-m", "bridge", "-c", str(self.config_path)],
            cwd=self.workdir,
            stdout=open(self._log_file, "ab"),  # noqa: SIM115 - lives with the process
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=limit_open_files,
            env={**os.environ, "SSL_CERT_FILE": str(self.ca_file)} if self.ca_file else None,
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise RuntimeError(f"bridge exited with {code}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/_matrix/mau/ready", timeout=2):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"bridge not ready within {READY_TIMEOUT_S} s:\n{self.log_tail()}")

    def stop(self) -> int:
        """SIGTERM, as a service manager would; returns the exit code."""
        assert self._process is not None
        self._process.send_signal(signal.SIGTERM)
        try:
            code = self._process.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        self._process = None
        return code

    def kill(self) -> None:
        if self._process and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGKILL)
            self._process.wait()
        self._process = None

    @property
    def log_path(self) -> Path:
        """Everything the process wrote, across restarts."""
        return self._log_file

    def log_tail(self, lines: int = 40) -> str:
        if not self._log_file.exists():
            return ""
        return "\n".join(self._log_file.read_text(errors="replace").splitlines()[-lines:])

    def log_text(self) -> str:
        return self._log_file.read_text(errors="replace") if self._log_file.exists() else ""
