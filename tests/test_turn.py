"""TURN the way Synapse does it (coturn's shared-secret mode), against a real coturn: a client
whose direct UDP path to the SFU is cut still gets media, through TURN, with the credentials
of its join response.

The client runs in a network namespace of its own, linked to this machine by a veth pair; the
namespace's firewall drops its UDP to this machine except to the TURN server's port. The
bridge's focus, media and coturn listen on this machine's end of the link (and media on
loopback, for the other participant).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
import asyncio
import json
import re
import sys
import time

from mautrix.types import RoomID
import pytest

from bridge.doctor.findings import Finding, Status
from bridge.doctor.probes import turn_findings
from demo.bridge_process import BridgeProcess
from demo.livekit_client import focus_token
from demo.synapse import MatrixUser, Synapse
from demo.waiting import eventually
from sfu import MediaSettings, TurnSecret

from .conftest import bridge_reachable_from
from .support.calls import LUMAS, ClientFactory
from .support.coturn import coturn
from .support.netns import Namespace, namespace

SECRET = "turn-test-shared-secret"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def netns() -> Iterator[Namespace]:
    with namespace() as ns:
        yield ns


@pytest.fixture(scope="module")
def turn_port(netns: Namespace, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """coturn configured as for Synapse: use-auth-secret with a static secret."""
    options = (
        "--use-auth-secret",
        f"--static-auth-secret={SECRET}",
        "--realm=turn.test",
        "--allow-loopback-peers",
    )
    with coturn(tmp_path_factory.mktemp("coturn"), netns.host_address, *options) as port:
        yield port


@pytest.fixture(scope="module")
async def running_bridge(
    bridge_home: BridgeProcess,
    synapse: Synapse,
    netns: Namespace,
    turn_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[BridgeProcess]:
    """The bridge with TURN, reachable from the namespace."""
    settings = {
        "media.turn_uris": [f"turn:{netns.host_address}:{turn_port}?transport=udp"],
        "media.turn_shared_secret": SECRET,
    }
    directory = tmp_path_factory.mktemp("bridge")
    async with bridge_reachable_from(netns, bridge_home, directory, settings) as bridge:
        yield bridge


def cut_direct_udp(ns: Namespace, turn_port: int) -> None:
    """Drop the namespace's UDP to this machine, except to the TURN server; count drops."""
    ns.nft("add table inet cut")
    ns.nft("add chain inet cut out { type filter hook output priority 0; policy accept; }")
    ns.nft(
        f"add rule inet cut out ip daddr {ns.host_address} udp dport != {turn_port} counter drop"
    )


def dropped_packets(ns: Namespace) -> int:
    match = re.search(r"counter packets (\d+)", ns.nft("list chain inet cut out"))
    assert match is not None
    return int(match.group(1))


async def test_client_behind_a_firewall_gets_media_through_turn(
    connect: ClientFactory,
    running_bridge: BridgeProcess,
    synapse: Synapse,
    users: dict[str, MatrixUser],
    room_id: RoomID,
    netns: Namespace,
    turn_port: int,
) -> None:
    cut_direct_udp(netns, turn_port)
    alice = await connect("alice")
    await alice.publish(luma=LUMAS["alice"], amplitude=0.5)
    token = await focus_token(running_bridge, synapse, users["bob"], room_id)
    receiver = await asyncio.create_subprocess_exec(
        *netns.command(sys.executable, "-m", "tests.support.turn_receiver", alice.focus_url),
        cwd=REPO,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(receiver.communicate(token.encode()), 120)
    assert receiver.returncode == 0, stderr.decode()[-3000:]
    bob = json.loads(stdout)

    # Bob's own credentials, in coturn's REST scheme, expiring after media.turn_ttl.
    [server] = bob["ice_servers"]
    assert server["urls"] == [f"turn:{netns.host_address}:{turn_port}?transport=udp"]
    expiry, _, user = server["username"].partition(":")
    assert user == users["bob"].user_id
    assert int(expiry) > time.time() + 86400 - 3600
    # Media reached him although every direct packet to the SFU was dropped: through TURN.
    assert bob["relay_candidate"], bob
    assert dropped_packets(netns) > 0
    assert len(bob["lumas"]) == 5, bob
    assert all(abs(luma - LUMAS["alice"]) < 12 for luma in bob["lumas"]), bob
    # The SFU allocates a relay of its own too, with credentials it minted.
    answer = alice.pub_pc.remoteDescription
    assert answer is not None
    assert " typ relay" in answer.sdp


async def test_doctor_checks_minted_credentials(tmp_path: Path) -> None:
    """The doctor allocates with credentials minted as the bridge mints them."""
    options = ("--use-auth-secret", f"--static-auth-secret={SECRET}", "--realm=turn.test")
    with coturn(tmp_path, "127.0.0.1", *options) as port:
        url = f"turn:127.0.0.1:{port}?transport=udp"

        async def findings(secret: str) -> list[Finding]:
            settings = MediaSettings(turn=TurnSecret((url,), secret))
            return await turn_findings(settings.ice_servers_for("doctor", time.time()))

        async def accepted() -> Finding | None:
            [finding] = await findings(SECRET)
            return finding if finding.status is Status.OK else None

        await eventually(accepted, timeout=30)
        [refused] = await findings("not-the-secret")
        assert refused.status is Status.FAIL
        assert "refuses the credentials (401" in refused.line()
        assert "media.turn_shared_secret" in refused.line()
