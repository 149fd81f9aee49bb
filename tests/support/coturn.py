"""coturn (Debian's package) started by a test, on an address of the test's choosing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
import shutil
import subprocess

from demo.ports import free_port


@contextmanager
def coturn(workdir: Path, listening_ip: str, *options: str) -> Iterator[int]:
    """A ``turnserver`` listening and relaying on ``listening_ip`` (no TLS, no CLI), with
    ``options`` for its credentials; yields its port. Fails, never skips, without coturn."""
    assert shutil.which("turnserver"), "coturn is missing: apt-get install coturn"
    port = free_port()
    process = subprocess.Popen(
        [
            "turnserver",
            "-n",
            f"--listening-ip={listening_ip}",
            f"--relay-ip={listening_ip}",
            f"--listening-port={port}",
            f"--userdb={workdir / 'turndb'}",
            f"--pidfile={workdir / 'turnserver.pid'}",
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--log-file=stdout",
            *options,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield port
    finally:
        process.terminate()
        process.wait(10)
