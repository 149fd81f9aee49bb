"""A network namespace of the test's own, joined to this machine by a veth pair in a private
/30: a client inside it reaches this machine only through that link, which the namespace's
own firewall (nftables) can cut. Nothing outside the namespace is changed but the host end of
the link, and both go when the namespace is deleted."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
import os
import shutil
import subprocess


@dataclass(frozen=True)
class Namespace:
    name: str
    host_address: str
    """This machine's end of the link."""
    address: str
    """The namespace's end."""
    host_link: str
    """This machine's end of the veth pair: what it sends there goes to the namespace."""

    def command(self, *args: str) -> list[str]:
        """``args`` as a command run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *args]

    def nft(self, *args: str) -> str:
        """Run ``nft`` inside the namespace; returns its output."""
        return _run(*self.command("nft", *args))

    def limit_downlink(self, kbit_per_second: int) -> None:
        """Shape what this machine sends into the namespace to ``kbit_per_second``, as a slow
        last mile would: a token bucket whose queue holds up to 200 ms, so that delay builds
        before packets are dropped. Goes with the namespace."""
        _run(
            "tc", "qdisc", "add", "dev", self.host_link, "root", "tbf",
            "rate", f"{kbit_per_second}kbit", "burst", "4kb", "latency", "200ms",
        )  # fmt: skip


def _run(*args: str) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, f"{' '.join(args)}: {done.stderr}"
    return done.stdout


@contextmanager
def namespace() -> Iterator[Namespace]:
    """A fresh namespace, named and addressed after this process (10.213.<pid % 256>.0/30).
    Fails, never skips, without root, ``ip`` or ``nft``."""
    for tool in ("ip", "nft", "tc"):
        assert shutil.which(tool), f"{tool} is missing: apt-get install iproute2 nftables"
    pid = os.getpid()
    subnet = f"10.213.{pid % 256}"
    host_link, ns_link = f"cbh{pid}", f"cbn{pid}"
    ns = Namespace(f"cbtest{pid}", f"{subnet}.1", f"{subnet}.2", host_link)
    _run("ip", "netns", "add", ns.name)
    try:
        _run("ip", "link", "add", host_link, "type", "veth", "peer", "name", ns_link)
        _run("ip", "link", "set", ns_link, "netns", ns.name)
        _run("ip", "addr", "add", f"{ns.host_address}/30", "dev", host_link)
        _run("ip", "link", "set", host_link, "up")
        _run("ip", "-n", ns.name, "addr", "add", f"{ns.address}/30", "dev", ns_link)
        _run("ip", "-n", ns.name, "link", "set", ns_link, "up")
        _run("ip", "-n", ns.name, "link", "set", "lo", "up")
        yield ns
    finally:
        # Deleting the namespace deletes its end of the veth pair, and with it the host's.
        subprocess.run(["ip", "netns", "del", ns.name], check=False, timeout=30)
        subprocess.run(["ip", "link", "del", host_link], capture_output=True, timeout=30)
