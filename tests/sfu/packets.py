"""Hand-made RTP packets and VP8 payloads for the unit tests."""

from __future__ import annotations

import struct


def rtp(
    seq: int = 1,
    ts: int = 1000,
    ssrc: int = 0x1234,
    pt: int = 96,
    ext: bytes = b"",
    payload: bytes = b"payload",
    csrcs: int = 0,
) -> bytes:
    b0 = 0x80 | (0x10 if ext else 0) | csrcs
    header = struct.pack("!BBHII", b0, pt, seq, ts, ssrc) + bytes(4 * csrcs)
    return header + ext + payload


def vp8_payload(
    start: bool = True,
    key: bool = True,
    pid: int | None = 0x1234,
    tl0: int | None = 7,
    size: tuple[int, int] | None = None,
) -> bytes:
    """A VP8 payload descriptor and frame start; with ``size`` a whole key frame header."""
    b0 = (0x80 if pid is not None or tl0 is not None else 0) | (0x10 if start else 0)
    out = bytes([b0])
    if b0 & 0x80:
        out += bytes([(0x80 if pid is not None else 0) | (0x40 if tl0 is not None else 0)])
        if pid is not None:
            out += bytes([0x80 | pid >> 8, pid & 0xFF])
        if tl0 is not None:
            out += bytes([tl0])
    if size is not None:
        frame_tag = bytes([0x00 if key else 0x01, 0, 0])
        return out + frame_tag + b"\x9d\x01\x2a" + struct.pack("<HH", *size)
    return out + bytes([0x00 if key else 0x01, 0x9D, 0x01, 0x2A])
