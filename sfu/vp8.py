"""VP8 RTP payload descriptor (RFC 7741): key-frame detection and PictureID/TL0PICIDX rewrite.

Only the descriptor and the first byte of the VP8 frame header are read. Both stay in clear
under LiveKit/Element Call end-to-end encryption (the first 10 bytes of key frames are left
unencrypted precisely so that SFUs can find them).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ._fanout import ffi, lib


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
    layer the outgoing ids must continue from the last one sent. The ids live in the stream's
    lane (:mod:`sfu.outbox`), whose native forwarding path rewrites them in every packet.
    """

    __slots__ = ("_lane", "_out")

    def __init__(self, lane: Any) -> None:
        self._lane = lane
        self._out = ffi.new("int[2]")

    def switch(self) -> None:
        """The next packet starts a new source; continue the ids from the last ones sent."""
        self._lane.rebase = 1

    def rewrite(self, info: Vp8Info) -> tuple[int, int]:
        """The outgoing PictureID and TL0PICIDX of the packet ``info`` describes (-1 for
        either it lacks), as the forwarding path writes them (and counts them as sent)."""
        lib.sfu_rewrite_ids(
            self._lane, info.picture_id, info.picture_id_bits, info.tl0picidx, self._out
        )
        return int(self._out[0]), int(self._out[1])
