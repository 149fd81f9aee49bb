"""Try a call in two browser tabs: a throwaway Synapse with the bridge registered, two demo
users in a room with the bot, the call page served locally, and a link for each user.

Run from a checkout after ``pip install -e '.[test]'`` (Synapse comes with the test extra)
and ``npm ci`` in ``web/``. Everything lives in a temporary folder and is gone on Ctrl-C.
"""

from __future__ import annotations

from pathlib import Path
import argparse
import asyncio
import contextlib
import shutil
import tempfile

from mautrix.types import EventType, Membership, PowerLevelStateEventContent, RoomID, UserID
from yarl import URL

from bridge.call_membership import CALL_MEMBER

from .bridge_process import BridgeProcess, edit_config
from .matrix_client import matrix_client, wait_for_membership
from .synapse import SERVER_NAME, MatrixUser, Synapse
from .web import web_pages

USERS = ("alice", "bob")


async def demo_room(synapse: Synapse, users: dict[str, MatrixUser]) -> RoomID:
    """A room with the bot and both users, where every member may publish (as Element Call
    sets up call rooms)."""
    bot = UserID(f"@callbot:{SERVER_NAME}")
    async with matrix_client(users["alice"], synapse.base_url) as alice:
        room = await alice.create_room(
            name="Demo call",
            invitees=[bot, UserID(users["bob"].user_id)],
            power_level_override=PowerLevelStateEventContent(
                events={EventType.find(CALL_MEMBER, EventType.Class.STATE): 0}
            ),
        )
        await wait_for_membership(alice, room, bot, Membership.JOIN)
    async with matrix_client(users["bob"], synapse.base_url) as bob:
        await bob.join_room_by_id(room)
    return room


def call_link(
    pages_url: str, synapse: Synapse, bridge: BridgeProcess, user: MatrixUser, room: RoomID
) -> str:
    return str(
        URL(f"{pages_url}/call.html").with_query(
            hs=synapse.base_url,
            token=user.access_token,
            user=user.user_id,
            device=user.device_id,
            room=room,
            focus=bridge.focus_url,
            name="Demo call",
            options="element-call",  # camera and layers as Element Call sends them
        )
    )


async def run(workdir: Path, loopback: bool) -> None:
    synapse = Synapse(workdir / "synapse")
    bridge = BridgeProcess(workdir / "bridge", synapse.base_url, SERVER_NAME)
    print("Setting up the bridge (config, registration)…")
    bridge.configure({SERVER_NAME: "user"})
    # Media on this machine's network interfaces, which browsers use for their candidates;
    # loopback only for a browser started with --allow-loopback-in-peer-connection.
    edit_config(bridge.config_path, {"media.bind_addresses": ["127.0.0.1"] if loopback else []})
    print("Starting Synapse…")
    synapse.start(appservice_files=[bridge.registration_path], focus_url=bridge.focus_url)
    try:
        print("Starting the bridge…")
        bridge.start()
        try:
            users = {name: synapse.register_user(name) for name in USERS}
            room = await demo_room(synapse, users)
            async with web_pages() as pages_url:
                print(
                    "\nReady. Open each link in its own browser tab (allow camera/microphone):\n"
                )
                for name in USERS:
                    link = call_link(pages_url, synapse, bridge, users[name], room)
                    print(f"  {name}: {link}\n")
                print(f"Bridge log: {workdir / 'bridge' / 'bridge.log'}")
                print("Press Ctrl-C to stop and delete everything.")
                await asyncio.Event().wait()
        finally:
            bridge.stop()
    finally:
        synapse.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--loopback",
        action="store_true",
        help="media on 127.0.0.1 only (for browsers run with --allow-loopback-in-peer-connection)",
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="conference-demo-"))
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(run(workdir, args.loopback))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        print("\nStopped; the demo's files are deleted.")


if __name__ == "__main__":
    main()
