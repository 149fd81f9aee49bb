"""livekit-client's resume against the running bridge: a client whose signalling connection
drops reconnects with ``reconnect`` and its participant sid, and continues its session (its
tracks, subscriptions and peer connections) without the others seeing it leave; one that does
not come back within ``focus.resume_grace`` (3 s in tests) leaves as usual."""

from __future__ import annotations

from livekit.protocol import rtc

from demo.livekit_client import LiveKitClient, wait_until

from .support.calls import BOTH_PROTOCOLS, LUMAS, ClientFactory, decodes


@BOTH_PROTOCOLS
async def test_dropped_client_resumes_without_the_others_noticing(connect: ClientFactory) -> None:
    alice, bob = await connect("alice"), await connect("bob")
    await alice.publish(luma=LUMAS["alice"], amplitude=0.3)
    await bob.publish(luma=LUMAS["bob"], amplitude=0.3)
    await wait_until(lambda: decodes(bob, alice, LUMAS["alice"]))
    await wait_until(lambda: decodes(alice, bob, LUMAS["bob"]))
    alice_tracks = set(bob.participants[alice.sid].tracks)

    await alice.drop_connection()
    carol = await connect("carol")  # announced to alice while she is away
    first = await alice.resume()

    assert first.WhichOneof("message") == "reconnect"
    await wait_until(lambda: carol.sid in alice.participants)
    assert alice.sid in bob.participants and alice.sid in carol.participants
    assert set(bob.participants[alice.sid].tracks) == alice_tracks
    assert not alice.unpublished
    assert alice.leave is None
    frames = bob.video_from(alice).video_frames, alice.video_from(bob).video_frames
    await wait_until(lambda: bob.video_from(alice).video_frames > frames[0] + 30)
    await wait_until(lambda: alice.video_from(bob).video_frames > frames[1] + 30)
    await wait_until(lambda: decodes(carol, alice, LUMAS["alice"]))
    assert alice.sid not in bob.departures + carol.departures


async def test_client_that_does_not_come_back_leaves(connect: ClientFactory) -> None:
    alice, bob = await connect("alice"), await connect("bob")
    await alice.publish(luma=LUMAS["alice"])
    await wait_until(lambda: alice.sid in bob.participants)

    await alice.drop_connection()
    await wait_until(lambda: alice.sid in bob.departures, timeout=15)
    late = await alice.resume()

    assert late.WhichOneof("message") == "leave"
    assert late.leave.action == rtc.LeaveRequest.Action.RECONNECT  # join afresh
    assert alice.sid not in bob.participants


async def test_only_its_own_client_resumes_a_session(connect: ClientFactory) -> None:
    alice, bob = await connect("alice"), await connect("bob")
    await alice.publish(luma=LUMAS["alice"])
    intruder = LiveKitClient(bob.focus_url, bob.token)
    intruder.join = alice.join  # bob's token, alice's participant sid
    try:
        refused = await intruder.resume()
    finally:
        await intruder.close(send_leave=False)

    assert refused.WhichOneof("message") == "leave"
    assert alice.sid in bob.participants
    frames = bob.video_from(alice).video_frames
    await wait_until(lambda: bob.video_from(alice).video_frames > frames + 30)
