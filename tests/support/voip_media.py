"""A 1:1-call client's media for dial-in tests: an aiortc peer that sends a tone and flat
marked video on one sendrecv audio and one sendrecv video section (as 1:1 clients offer),
and keeps what it receives for spectrum and luma checks."""

from __future__ import annotations

from collections import deque
import asyncio
import fractions

from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, VideoStreamTrack
import av
import numpy as np

WIDTH, HEIGHT = 160, 120
SAMPLE_RATE = 48000
KEPT_SECONDS = 2


class Tone(AudioStreamTrack):
    """A sine of ``frequency``; ``amplitude`` (0..1) sets the RFC 6464 level aiortc sends."""

    def __init__(self, frequency: float, amplitude: float) -> None:
        super().__init__()
        self.frequency = frequency
        self.amplitude = amplitude
        self._phase = 0

    async def recv(self) -> av.AudioFrame:
        frame = await super().recv()  # paces 20 ms frames
        assert isinstance(frame, av.AudioFrame)
        t = (np.arange(frame.samples) + self._phase) / frame.sample_rate
        self._phase += frame.samples
        tone = (np.sin(2 * np.pi * self.frequency * t) * 32767 * self.amplitude).astype(np.int16)
        out = av.AudioFrame.from_ndarray(tone.reshape(1, -1), format="s16", layout="mono")
        out.sample_rate, out.pts = frame.sample_rate, frame.pts
        out.time_base = fractions.Fraction(1, frame.sample_rate)
        return out


class FlatVideo(VideoStreamTrack):
    """Frames of one luma: the sender's marker, which survives VP8."""

    def __init__(self, luma: int) -> None:
        super().__init__()
        self._image = np.full((HEIGHT * 3 // 2, WIDTH), 128, dtype=np.uint8)
        self._image[:HEIGHT] = luma

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame.from_ndarray(self._image, format="yuv420p")
        frame.pts, frame.time_base = pts, time_base
        return frame


def tone_strength(samples: np.ndarray, frequency: float) -> float:
    """The tone's magnitude relative to the spectrum's median (a noise floor); 0 without
    enough audio to tell."""
    if len(samples) < SAMPLE_RATE // 4:
        return 0.0
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    freqs = np.fft.rfftfreq(len(samples), 1 / SAMPLE_RATE)
    band = (freqs > frequency - 15) & (freqs < frequency + 15)
    return float(spectrum[band].max() / (np.median(spectrum) + 1e-9))


class CallPeer:
    """The media half of a 1:1 call client; signalling is up to the test."""

    def __init__(self, frequency: float, amplitude: float, luma: int | None) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.tone = Tone(frequency, amplitude)
        self.pc.addTransceiver(self.tone, direction="sendrecv")
        if luma is not None:
            self.pc.addTransceiver(FlatVideo(luma), direction="sendrecv")
        self.audio: deque[np.ndarray] = deque(maxlen=KEPT_SECONDS * 50)
        self.lumas: list[float] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.pc.on("track", self._on_track)

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def accept_answer(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))

    def recent_audio(self, seconds: float = 1.0) -> np.ndarray:
        frames = list(self.audio)[-int(seconds * 50) :]
        return np.concatenate(frames) if frames else np.zeros(1)

    def hears(self, frequency: float) -> float:
        return tone_strength(self.recent_audio(), frequency)

    def sees(self) -> float | None:
        return float(np.mean(self.lumas[-5:])) if len(self.lumas) >= 5 else None

    def _on_track(self, track: MediaStreamTrack) -> None:
        task = asyncio.ensure_future(self._consume(track))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _consume(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                if isinstance(frame, av.VideoFrame):
                    self.lumas.append(float(frame.to_ndarray(format="yuv420p")[:HEIGHT].mean()))
                elif isinstance(frame, av.AudioFrame):
                    pcm = frame.to_ndarray().reshape(-1, len(frame.layout.channels))
                    self.audio.append(pcm.mean(axis=1))
        except MediaStreamError:
            pass

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.pc.close()
