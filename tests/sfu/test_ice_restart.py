"""ICE restart on a running transport, as livekit-client asks for one after resuming: the
client offers new ICE credentials, the SFU answers with new ones of its own, and both sides'
checks (consent included) use the new ones from then on, with media flowing throughout.

aiortc clients cannot restart ICE themselves, so the client half is done here by hand on the
client's aioice connection (test-only, as the taps in ``sfu_peers``)."""

from __future__ import annotations

from typing import Any
import re

from aiortc import RTCPeerConnection, RTCSessionDescription
from sfu_peers import Room, wait_for

from sfu import ParticipantState, ParticipantStateChanged


def ice_connection(pc: RTCPeerConnection) -> Any:
    return pc.getTransceivers()[0].sender.transport.transport.iceGatherer._connection


def credentials(sdp: str) -> tuple[str, str]:
    ufrag = re.search(r"a=ice-ufrag:(\S+)", sdp)
    password = re.search(r"a=ice-pwd:(\S+)", sdp)
    assert ufrag and password
    return ufrag.group(1), password.group(1)


async def test_restarted_ice_keeps_the_media_and_the_participant(room: Room) -> None:
    alice, bob = room.add("alice"), room.add("bob")
    await alice.publish(luma=60, amplitude=0.1)
    await wait_for(lambda: bob.video_from("alice").video_frames >= 10)
    first_answer = alice.pub_pc.remoteDescription.sdp

    client = ice_connection(alice.pub_pc)
    client._local_username, client._local_password = "rstr", "restartedpassword12345"
    await alice.pub_pc.setLocalDescription(await alice.pub_pc.createOffer())
    offer = alice.pub_pc.localDescription.sdp
    assert credentials(offer) == ("rstr", "restartedpassword12345")
    answer = await alice.publisher.accept_offer(offer)
    await alice.pub_pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    client.remote_username, client.remote_password = credentials(answer)

    assert credentials(answer) != credentials(first_answer)
    # Consent is checked every second and fails after three misses (tests/sfu/conftest.py):
    # some 300 frames take ten seconds, long enough for stale credentials to end the call.
    start = bob.video_from("alice").video_frames
    await wait_for(lambda: bob.video_from("alice").video_frames >= start + 300, timeout=40)
    assert alice.publisher.state == "connected"
    assert not [
        e
        for e in room.events_of(ParticipantStateChanged)
        if e.participant_id == "alice" and e.state is ParticipantState.DISCONNECTED
    ]
