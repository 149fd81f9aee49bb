"""H.264 RTP payload (RFC 6184): key-frame detection without depacketising.

A packet starts a decodable picture when it carries an IDR slice (5) or a sequence parameter
set (7), either as a single NAL unit, inside a STAP-A, or as the first fragment of an FU-A.
Under LiveKit end-to-end encryption the NAL headers stay in clear.
"""

from __future__ import annotations

_IDR, _SPS, _STAP_A, _FU_A = 5, 7, 24, 28
_KEY_TYPES = frozenset((_IDR, _SPS))


def is_keyframe(data: bytes, offset: int) -> bool:
    """True if the H.264 payload at ``offset`` starts a key frame."""
    end = len(data)
    if offset >= end:
        return False
    nal_type = data[offset] & 0x1F
    if nal_type == _FU_A:
        return (
            offset + 1 < end
            and bool(data[offset + 1] & 0x80)
            and (data[offset + 1] & 0x1F) in _KEY_TYPES
        )
    if nal_type == _STAP_A:
        pos = offset + 1
        while pos + 2 < end:
            size = (data[pos] << 8) | data[pos + 1]
            if (data[pos + 2] & 0x1F) in _KEY_TYPES:
                return True
            pos += 2 + size
        return False
    return nal_type in _KEY_TYPES
