"""SDP offers that break aiortc part-way through, for tests of what failed negotiations leave."""

from __future__ import annotations

from aiortc import RTCPeerConnection

from demo.media import MarkedVideo, ToneAudio, config


async def repeated_mid_offer(data_channel: bool) -> str:
    """An offer aiortc rejects part-way: two sections with one mid (media and media, or the
    data channel's mid on a media section, which fails after transports were made)."""
    pc = RTCPeerConnection(config())
    if data_channel:
        pc.createDataChannel("_reliable")
    pc.addTransceiver(ToneAudio(0.1), direction="sendrecv")
    pc.addTransceiver(MarkedVideo(10), direction="sendrecv")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    mids = [line[6:] for line in sdp.splitlines() if line.startswith("a=mid:")]
    return sdp.replace(f"a=mid:{mids[0]}\r", f"a=mid:{mids[-1]}\r", 1)
