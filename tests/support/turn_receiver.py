"""A LiveKit client that joins a call, waits for video and prints what it got as JSON.

Run inside a network namespace (``python -m tests.support.turn_receiver <focus URL>``, the
token on stdin): it uses only the ICE servers the join response names, as livekit-client does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys

from demo.livekit_client import LiveKitClient, wait_until

WAIT_S = 40.0


async def receive(focus_url: str, token: str) -> dict[str, object]:
    client = LiveKitClient(focus_url, token, "v0")
    try:
        join = await client.connect()

        def video() -> list[float]:
            return max((r.lumas for r in client.received.values()), key=len, default=[])

        with contextlib.suppress(AssertionError):  # what arrived is reported either way
            await wait_until(lambda: len(video()) >= 5, timeout=WAIT_S)
        local = client.sub_pc.localDescription
        return {
            "ice_servers": [
                {"urls": list(s.urls), "username": s.username} for s in join.ice_servers
            ],
            "lumas": video()[-5:],
            "relay_candidate": local is not None and " typ relay" in local.sdp,
            "state": client.sub_pc.connectionState,
        }
    finally:
        await client.close()


if __name__ == "__main__":
    result = asyncio.run(receive(sys.argv[1], sys.stdin.read().strip()))
    print(json.dumps(result))
