"""VP8 RTP payload descriptor (RFC 7741): key-frame detection and PictureID/TL0PICIDX rewrite.

Only the descriptor and the first byte of the VP8 frame header are read. Both stay in clear
under LiveKit/Element Call end-to-end encryption (the first 10 bytes of key frames are left
unencrypted precisely so that SFUs can find them).
"""

from __future__ import annotations

from typing import NamedTuple


class Vp8Info(NamedTuple):
    """What the forwarding path needs to know about one VP8 packet."""

    keyframe: bool
    """First packet of a key frame (S=1, PID=0, P=0 in the frame tag)."""
    picture_id: int
    """-1 when the descriptor has no PictureID."""
    picture_id_pos: int
    picture_id_bits: int
    """7 or 15 (0 when absent)."""
    tl0picidx: int
    """-1 when absent."""
    tl0picidx_pos: int


NO_INFO = Vp8Info(False, -1, 0, 0, -1, 0)


def parse(data: bytes, offset: int) -> Vp8Info:
    """Parse the descriptor of the VP8 payload starting at ``offset``; tolerant of garbage."""
    end = len(data)
    if offset >= end:
        return NO_INFO
    b0 = data[offset]
    pos = offset + 1
    picture_id, pid_pos, pid_bits, tl0, tl0_pos = -1, 0, 0, -1, 0
    if b0 & 0x80:
        if pos >= end:
            return NO_INFO
        x = data[pos]
        pos += 1
        if x & 0x80:
            if pos >= end:
                return NO_INFO
            pid_pos = pos
            if data[pos] & 0x80:
                if pos + 1 >= end:
                    return NO_INFO
                picture_id = ((data[pos] & 0x7F) << 8) | data[pos + 1]
                pid_bits = 15
                pos += 2
            else:
                picture_id = data[pos]
                pid_bits = 7
                pos += 1
        if x & 0x40:
            if pos >= end:
                return NO_INFO
            tl0, tl0_pos = data[pos], pos
            pos += 1
        if x & 0x30:
            pos += 1
    keyframe = (b0 & 0x17) == 0x10 and pos < end and not data[pos] & 0x01
    return Vp8Info(keyframe, picture_id, pid_pos, pid_bits, tl0, tl0_pos)


def keyframe_size(data: bytes, offset: int) -> tuple[int, int] | None:
    """Width and height from the first packet of a key frame (RFC 6386 §9.1: the 3-byte frame
    tag, the start code, then 14-bit width and height; clear under end-to-end encryption)."""
    pos = _descriptor_end(data, offset)
    if pos + 10 > len(data) or data[pos + 3 : pos + 6] != b"\x9d\x01\x2a":
        return None
    width = (data[pos + 6] | data[pos + 7] << 8) & 0x3FFF
    height = (data[pos + 8] | data[pos + 9] << 8) & 0x3FFF
    return width, height


def _descriptor_end(data: bytes, offset: int) -> int:
    """Where the VP8 payload starts after the descriptor at ``offset``."""
    pos = offset + 1
    if pos < len(data) and data[offset] & 0x80:
        x = data[pos]
        pos += 1
        if x & 0x80 and pos < len(data):
            pos += 2 if data[pos] & 0x80 else 1
        pos += bool(x & 0x40) + bool(x & 0x30)
    return pos


class PictureIdRewriter:
    """Keeps one subscriber's PictureID and TL0PICIDX continuous across source switches.

    Decoders treat a jump in PictureID as loss; after a switch to another publisher or simulcast
    layer the outgoing ids must continue from the last one sent.
    """

    __slots__ = ("_last_pid", "_last_tl0", "_pid_offset", "_rebase", "_tl0_offset")

    def __init__(self) -> None:
        self._pid_offset = 0
        self._tl0_offset = 0
        self._last_pid = -1
        self._last_tl0 = -1
        self._rebase = False

    def switch(self) -> None:
        """The next packet starts a new source; continue the ids from the last ones sent."""
        self._rebase = True

    def rewrite(self, buf: bytearray | memoryview, info: Vp8Info) -> None:
        """Rewrite the ids of the packet in ``buf`` (same layout as parsed) in place."""
        pid = info.picture_id
        if pid >= 0:
            mask = (1 << info.picture_id_bits) - 1
            if self._rebase:
                self._pid_offset = (self._last_pid + 1 - pid) if self._last_pid >= 0 else 0
            out = (pid + self._pid_offset) & mask
            if out != pid:
                pos = info.picture_id_pos
                if info.picture_id_bits == 15:
                    buf[pos] = 0x80 | (out >> 8)
                    buf[pos + 1] = out & 0xFF
                else:
                    buf[pos] = out
            if self._last_pid < 0 or ((out - self._last_pid) & mask) < (mask >> 1):
                self._last_pid = out
        tl0 = info.tl0picidx
        if tl0 >= 0:
            if self._rebase:
                self._tl0_offset = (self._last_tl0 + 1 - tl0) if self._last_tl0 >= 0 else 0
            out = (tl0 + self._tl0_offset) & 0xFF
            buf[info.tl0picidx_pos] = out
            if self._last_tl0 < 0 or ((out - self._last_tl0) & 0xFF) < 0x80:
                self._last_tl0 = out
        self._rebase = False
