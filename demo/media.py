"""Synthetic, recognisable media for WebRTC test peers.

Video frames are flat grey images whose luma identifies the publisher (the marker survives
VP8 encoding and decoding); audio is a sine whose amplitude sets the RFC 6464 level aiortc's
encoder writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
import fractions

from aiortc import MediaStreamTrack, RTCConfiguration, RTCIceServer
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, VideoStreamTrack
from aiortc.rtcconfiguration import RTCBundlePolicy
import av
import numpy as np

WIDTH, HEIGHT = 160, 120


class MarkedVideo(VideoStreamTrack):
    """Flat frames of a given luma: the publisher's marker."""

    def __init__(self, luma: int) -> None:
        super().__init__()
        image = np.full((HEIGHT * 3 // 2, WIDTH), 128, dtype=np.uint8)
        image[:HEIGHT] = luma
        self._image = image

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame.from_ndarray(self._image, format="yuv420p")
        frame.pts, frame.time_base = pts, time_base
        return frame


class ToneAudio(AudioStreamTrack):
    """A 440 Hz tone; ``amplitude`` (0..1) can change while running."""

    def __init__(self, amplitude: float) -> None:
        super().__init__()
        self.amplitude = amplitude
        self._phase = 0

    async def recv(self) -> av.AudioFrame:
        frame = await super().recv()  # paces 20 ms frames of silence
        assert isinstance(frame, av.AudioFrame)
        samples = frame.samples
        t = (np.arange(samples) + self._phase) / frame.sample_rate
        self._phase += samples
        tone = (np.sin(2 * np.pi * 440 * t) * 32767 * self.amplitude).astype(np.int16)
        out = av.AudioFrame.from_ndarray(tone.reshape(1, -1), format="s16", layout="mono")
        out.sample_rate = frame.sample_rate
        out.pts = frame.pts
        out.time_base = fractions.Fraction(1, frame.sample_rate)
        return out


@dataclass
class Received:
    """What a client decoded from one remote track."""

    video_frames: int = 0
    audio_frames: int = 0
    lumas: list[float] = field(default_factory=list)


def config(ice_servers: Sequence[RTCIceServer] = ()) -> RTCConfiguration:
    """Only the given ICE servers (none by default); one bundled transport, as browsers use
    with LiveKit."""
    return RTCConfiguration(iceServers=list(ice_servers), bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


async def consume(track: MediaStreamTrack, stats: Received) -> None:
    """Decode a received track until it ends, counting frames and reading video markers."""
    try:
        while True:
            frame = await track.recv()
            if isinstance(frame, av.VideoFrame):
                stats.video_frames += 1
                stats.lumas.append(float(frame.to_ndarray(format="yuv420p")[:HEIGHT].mean()))
            else:
                stats.audio_frames += 1
    except MediaStreamError:
        pass
