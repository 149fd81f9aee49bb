"""Audio mixing for legs that receive a single stream (legacy 1:1 VoIP): the only decoding.

A 1:1 client plays one remote audio stream, so it must get the conference mixed. Per
conference there is one :class:`AudioMixer`; every 20 ms it takes one decoded frame of each
source, sums them once, and hands each listener the sum minus its own contribution (nobody
hears themselves). aiortc then encodes each listener's frames to Opus for that listener alone,
which a 1:1 leg needs anyway. A source is decoded only while a listener other than its
publisher exists: a lone listener costs no decoding of its own voice, and a conference without
listeners decodes nothing.

Payloads must be plain Opus: an end-to-end encrypted conference's audio cannot be decoded here
(the bridge refuses to mix those; see its dial-in documentation).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from collections import deque
import asyncio
import fractions
import logging

from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
import av
import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from .track import PublishedTrack

logger = logging.getLogger(__name__)

SAMPLE_RATE = 48000
FRAME_SAMPLES = 960
"""20 ms, the packet time of WebRTC Opus."""
FRAME_SECONDS = FRAME_SAMPLES / SAMPLE_RATE
PREBUFFER_FRAMES = 2
"""A source starts (and restarts after running dry) once this much is decoded: absorbs jitter."""
MAX_BUFFERED_FRAMES = 10
"""Beyond this a source's oldest frames are dropped, bounding the latency it adds."""
LISTENER_QUEUE_FRAMES = 5
MAX_LAG_FRAMES = 5
"""A clock this far behind (a stalled loop) restarts instead of bursting to catch up."""

Samples = npt.NDArray[np.int32]


class _Source:
    """One published audio track, decoded into 20 ms mono frames while enabled."""

    def __init__(self, track: PublishedTrack) -> None:
        self.track = track
        self.participant_id = track.info.participant_id
        self.enabled = False
        self._decoder: av.AudioCodecContext | None = None
        self._resampler: av.AudioResampler | None = None
        self._pending = np.empty(0, dtype=np.int32)
        self._frames: deque[Samples] = deque(maxlen=MAX_BUFFERED_FRAMES)
        self._last_seq: int | None = None
        self._playing = False

    def set_enabled(self, enabled: bool) -> None:
        if enabled == self.enabled:
            return
        self.enabled = enabled
        if enabled:
            self._decoder = av.CodecContext.create("opus", "r")
            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        else:
            self._decoder = self._resampler = None
            self._pending = np.empty(0, dtype=np.int32)
            self._frames.clear()
            self._last_seq = None
            self._playing = False

    def on_packet(self, packet: bytes, offset: int, seq: int) -> None:
        """A tap on the published track: decode one Opus packet (in order; late ones dropped)."""
        if self._decoder is None or self._resampler is None:
            return
        if self._last_seq is not None:
            ahead = (seq - self._last_seq) & 0xFFFF
            if ahead == 0 or ahead >= 0x8000:
                return
        self._last_seq = seq
        end = len(packet) - (packet[-1] if packet[0] & 0x20 else 0)
        if end <= offset:
            return
        try:
            decoded = self._decoder.decode(av.Packet(packet[offset:end]))
            resampled = [out for frame in decoded for out in self._resampler.resample(frame)]
        except (av.error.FFmpegError, ValueError):
            return  # not Opus we can decode (corrupt, or end-to-end encrypted)
        if not resampled:
            return
        samples = np.concatenate(
            [self._pending, *(frame.to_ndarray()[0].astype(np.int32) for frame in resampled)]
        )
        whole = len(samples) // FRAME_SAMPLES * FRAME_SAMPLES
        for start in range(0, whole, FRAME_SAMPLES):
            self._frames.append(samples[start : start + FRAME_SAMPLES])
        self._pending = samples[whole:]

    def next_frame(self) -> Samples | None:
        if not self._playing:
            if len(self._frames) < PREBUFFER_FRAMES:
                return None
            self._playing = True
        if not self._frames:
            self._playing = False
            return None
        return self._frames.popleft()


class MixedAudioTrack(MediaStreamTrack):
    """What one listener hears: the mix without itself, paced by the mixer's clock."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue: asyncio.Queue[av.AudioFrame | None] = asyncio.Queue(LISTENER_QUEUE_FRAMES)
        self._pts = 0
        self._time_base = fractions.Fraction(1, SAMPLE_RATE)

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self._queue.get()
        if frame is None:
            raise MediaStreamError
        return frame

    def push(self, samples: Samples) -> None:
        pcm = np.clip(samples, -32768, 32767).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        frame.time_base = self._time_base
        self._pts += FRAME_SAMPLES
        if self._queue.full():  # the encoder fell behind: keep the newest audio
            self._queue.get_nowait()
        self._queue.put_nowait(frame)

    def stop(self) -> None:
        if self.readyState == "live":
            if self._queue.full():
                self._queue.get_nowait()
            self._queue.put_nowait(None)
        super().stop()


class AudioMixer:
    """Mixes a conference's audio tracks for its single-stream listeners."""

    def __init__(self) -> None:
        self._sources: dict[str, _Source] = {}
        self._listeners: dict[str, MixedAudioTrack] = {}
        self._clock: asyncio.Task[None] | None = None
        self._silence = np.zeros(FRAME_SAMPLES, dtype=np.int32)

    @property
    def listeners(self) -> list[str]:
        return list(self._listeners)

    @property
    def decoding(self) -> list[str]:
        """Track ids currently decoded (for observability and tests)."""
        return [track_id for track_id, source in self._sources.items() if source.enabled]

    def listen(self, participant_id: str) -> MediaStreamTrack:
        """A track of everyone else's audio for ``participant_id``; ends when it stops
        listening (or leaves the conference). Attach it with
        :meth:`sfu.Participant.add_local_track`."""
        if participant_id in self._listeners:
            raise ValueError(f"{participant_id} already listens")
        track = MixedAudioTrack()
        self._listeners[participant_id] = track
        self._update()
        return track

    def remove_listener(self, participant_id: str) -> None:
        track = self._listeners.pop(participant_id, None)
        if track is not None:
            track.stop()
            self._update()

    def add_source(self, track: PublishedTrack) -> None:
        source = _Source(track)
        self._sources[track.info.track_id] = source
        track.taps.append(source.on_packet)
        self._update()

    def remove_source(self, track: PublishedTrack) -> None:
        source = self._sources.pop(track.info.track_id, None)
        if source is not None and source.on_packet in track.taps:
            track.taps.remove(source.on_packet)

    def close(self) -> None:
        for participant_id in list(self._listeners):
            self.remove_listener(participant_id)
        for source in list(self._sources.values()):
            self.remove_source(source.track)

    def _update(self) -> None:
        for source in self._sources.values():
            source.set_enabled(any(pid != source.participant_id for pid in self._listeners))
        if self._listeners and self._clock is None:
            self._clock = asyncio.get_running_loop().create_task(self._run())
        elif not self._listeners and self._clock is not None:
            self._clock.cancel()
            self._clock = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        start, ticks = loop.time(), 0
        while True:
            ticks += 1
            delay = start + ticks * FRAME_SECONDS - loop.time()
            if delay < -MAX_LAG_FRAMES * FRAME_SECONDS:
                logger.debug("audio mixer clock restarted after a %.0f ms stall", -delay * 1000)
                start, ticks = loop.time(), 0
            await asyncio.sleep(max(delay, 0))
            try:
                self._tick()
            except Exception:
                logger.exception("audio mixing failed")

    def _tick(self) -> None:
        """Mix once, then subtract each listener's own contribution."""
        own: dict[str, Samples] = {}
        for source in self._sources.values():
            frame = source.next_frame() if source.enabled else None
            if frame is not None:
                previous = own.get(source.participant_id)
                own[source.participant_id] = frame if previous is None else previous + frame
        total = sum(own.values(), self._silence)
        for participant_id, listener in self._listeners.items():
            mine = own.get(participant_id)
            listener.push(total - mine if mine is not None else total)
