"""Source switching on one outgoing slot, the single-PC (client offers) layout, settings."""

from __future__ import annotations

from typing import Any
import contextlib

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtcpPacket, RtcpSdesPacket, RtcpSrPacket
from sfu_peers import MarkedVideo, Room, ToneAudio, config, wait_for
import pytest

from sfu import SFU, MediaSettings, TrackKind, TransportRole, aiortc_seams
from sfu.transport import rtc_configuration


async def test_speaker_slot_switches_source_continuously(room: Room) -> None:
    alice, bob = room.add("alice"), room.add("bob")
    await alice.publish(luma=40)
    await bob.publish(luma=200)
    viewer = room.add("viewer", auto_subscribe=False)
    slot = viewer.participant.add_slot(TrackKind.VIDEO)
    slot.set_msid("conference", "speaker-video")
    slot.switch(room.conference.published_track("alice-video"))
    await wait_for(lambda: viewer.received.get("speaker-video") is not None)
    video = viewer.received["speaker-video"]
    await wait_for(lambda: len(video.lumas) >= 10 and abs(video.lumas[-1] - 40) < 12)

    slot.switch(room.conference.published_track("bob-video"))
    await wait_for(lambda: abs(video.lumas[-1] - 200) < 12)
    frames = video.video_frames
    await wait_for(lambda: video.video_frames >= frames + 15)  # keeps decoding after the switch
    assert abs(video.lumas[-1] - 200) < 12
    assert len(viewer.received) == 1  # one stream, two sources


async def test_subscribers_get_translated_sender_reports(room: Room) -> None:
    """Each SR comes with the stream's SDES in one compound packet; aiortc's own per-slot
    RTCP (its untranslated SRs, SDES on their own) is silent."""
    alice, bob = room.add("alice"), room.add("bob")
    await alice.publish(luma=40, amplitude=0.1)
    await wait_for(lambda: bool(bob.sub_pc.getTransceivers()))
    compounds: list[list[Any]] = []
    dtls: Any = bob.sub_pc.getTransceivers()[0].receiver.transport
    original = dtls._handle_rtcp_data

    async def handle_rtcp_data(data: bytes) -> None:
        compounds.append(RtcpPacket.parse(data))
        await original(data)

    dtls._handle_rtcp_data = handle_rtcp_data
    ssrcs = {s.ssrc for s in bob.participant.subscriptions}

    def reports() -> list[RtcpSrPacket]:
        return [p for c in compounds for p in c if isinstance(p, RtcpSrPacket)]

    await wait_for(lambda: {r.ssrc for r in reports() if r.sender_info.packet_count} == ssrcs)
    assert all(r.ssrc in ssrcs for r in reports())  # none of aiortc's own, untranslated SRs
    assert all(r.sender_info.ntp_timestamp for r in reports())
    cname = bob.sub_pc.remoteDescription.sdp.split(" cname:")[1].split()[0]
    for compound in compounds:
        sdes = [p for p in compound if isinstance(p, RtcpSdesPacket)]
        if not any(isinstance(p, RtcpSrPacket) for p in compound):
            assert not sdes  # SDES only with an SR: no per-slot timer of aiortc's
            continue
        report, description = compound
        assert isinstance(description, RtcpSdesPacket)
        assert [(c.ssrc, c.items) for c in description.chunks] == [
            (report.ssrc, [(1, cname.encode())])
        ]


async def test_single_transport_uses_client_offered_slots(room: Room) -> None:
    alice = room.add("alice")
    await alice.publish(luma=40, amplitude=0.1)
    carol = room.conference.join("carol")
    transport = carol.add_transport(TransportRole.SINGLE)  # subscriptions wait for slots
    pc = RTCPeerConnection(config())
    decoded: dict[str, int] = {}

    @pc.on("track")
    def on_track(track: Any) -> None:
        async def consume() -> None:
            with contextlib.suppress(MediaStreamError):
                while True:
                    await track.recv()
                    decoded[track.kind] = decoded.get(track.kind, 0) + 1

        room.peers["alice"]._spawn(consume())

    pc.addTransceiver(ToneAudio(0.1), direction="sendonly")
    pc.addTransceiver(MarkedVideo(100), direction="sendonly")
    pc.addTransceiver("audio", direction="recvonly")
    pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    answer = await transport.accept_offer(pc.localDescription.sdp)
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    try:
        await wait_for(lambda: decoded.get("video", 0) >= 5 and decoded.get("audio", 0) >= 5)
        # default track ids are "{participant}/{mid}"
        await wait_for(lambda: alice.received.get("carol/1") is not None)
        await wait_for(lambda: alice.received["carol/1"].video_frames >= 5)
        assert abs(alice.received["carol/1"].lumas[-1] - 100) < 12
    finally:
        await pc.close()


async def test_port_range_public_ip_and_no_implicit_ice_servers() -> None:
    assert rtc_configuration(MediaSettings()).iceServers == []
    settings = MediaSettings(
        bind_addresses=("127.0.0.1",),
        public_ip="192.0.2.7",
        udp_port_min=41000,
        udp_port_max=41009,
        ice_consent_interval=1.0,
        ice_consent_failures=3,
    )
    server = SFU(settings)
    await server.start()
    conference = server.create_conference("settings")
    try:
        participant = conference.join("p")
        transport = participant.add_transport(TransportRole.PUBLISHER)
        pc = RTCPeerConnection(config())
        pc.addTransceiver(ToneAudio(0.1), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        await transport.accept_offer(pc.localDescription.sdp)
        candidates = [c.candidate.split() for c in transport.local_candidates()]
        assert candidates
        assert all(c[4] == "192.0.2.7" and 41000 <= int(c[5]) <= 41009 for c in candidates)
        await pc.close()
    finally:
        await server.close()
    with pytest.raises(ValueError):
        MediaSettings(udp_port_min=5000)


async def test_self_test_fails_loudly_when_a_seam_is_gone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aiortc.rtcdtlstransport import RTCDtlsTransport

    monkeypatch.delattr(RTCDtlsTransport, "_handle_rtcp_data")
    with pytest.raises(aiortc_seams.SeamError, match="_handle_rtcp_data"):
        await aiortc_seams.self_test()


async def test_sfu_keeps_no_decoding_or_sending_state_of_aiortc(room: Room) -> None:
    """aiortc's jitter buffers, bitrate estimators (~100 KB a video receiver) and decoder
    threads are freed: the SFU's receivers never see RTP. Its sender slots run no task: the SFU
    writes their packets itself."""
    alice, bob = room.add("alice"), room.add("bob")
    await alice.publish(luma=40, amplitude=0.1)
    await wait_for(lambda: bob.audio_from("alice").audio_frames >= 5)
    receivers: list[Any] = [
        transceiver.receiver
        for peer in (alice, bob)
        for transport in (peer.publisher, peer.subscriber)
        for transceiver in transport.pc.getTransceivers()
    ]
    assert len(receivers) >= 4
    for receiver in receivers:
        assert receiver._RTCRtpReceiver__jitter_buffer is None
        assert receiver._RTCRtpReceiver__remote_bitrate_estimator is None
        assert receiver._RTCRtpReceiver__decoder_thread is None
        assert receiver._RTCRtpReceiver__decoder_queue is None
    slots: list[Any] = [t.sender for t in bob.subscriber.pc.getTransceivers()]
    assert len(slots) == 2
    for sender in slots:
        assert sender._RTCRtpSender__rtp_task.done()
        assert sender._RTCRtpSender__rtcp_task.done()


def fingerprint(sdp: str) -> str:
    return next(line for line in sdp.splitlines() if line.startswith("a=fingerprint:"))


async def test_connections_share_the_process_certificate(
    room: Room, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One DTLS certificate and SSL context serve every connection of the process (as in
    Janus and mediasoup), until it is replaced by a new one for new connections."""
    alice, bob = room.add("alice"), room.add("bob")
    await alice.publish(luma=40)
    await wait_for(lambda: bob.video_from("alice").video_frames >= 5)
    transports = [alice.publisher, alice.subscriber, bob.publisher, bob.subscriber]
    shared = {fingerprint(t.pc.localDescription.sdp) for t in transports if t.pc.localDescription}
    assert len(shared) == 1
    clients = {fingerprint(pc.localDescription.sdp) for pc in (alice.pub_pc, bob.sub_pc)}
    assert len(clients) == 2 and shared.isdisjoint(clients)

    monkeypatch.setattr(aiortc_seams, "CERTIFICATE_ROTATION", 0.0)
    carol = room.add("carol")
    await wait_for(lambda: carol.video_from("alice").video_frames >= 5)
    assert fingerprint(carol.subscriber.pc.localDescription.sdp) not in shared
    assert fingerprint(alice.publisher.pc.localDescription.sdp) in shared
