"""Byte-level RTP header handling for the forwarding path.

Why bytes and not :class:`aiortc.rtp.RtpPacket`: parsing and serialising packet objects costs
~9 µs per packet, a ``struct`` peek and one slice cost well under 1 µs (see
``reference/aiortc-sfu.md`` §3.3). Every inbound packet is validated and *canonicalised* here
once: the header-extension block is removed, because extension ids are negotiated per peer
connection and the publisher's ids (mid, rid, transport-cc...) mean nothing to subscribers.
Payload bytes are never touched, so end-to-end-encrypted frames survive.
"""

from __future__ import annotations

import struct

HEADER = struct.Struct("!BBHII")
"""First byte, marker+payload type, sequence number, timestamp, SSRC."""

REWRITE = struct.Struct("!BHII")
"""Marker+payload type, sequence number, timestamp, SSRC written at offset 1."""

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_ONE_BYTE_PROFILE = 0xBEDE
_TWO_BYTE_PROFILE_MASK = 0xFFF0
_TWO_BYTE_PROFILE = 0x1000
NO_AUDIO_LEVEL = -1


class MalformedPacket(ValueError):
    """The datagram is not a well-formed RTP packet."""


def canonicalize(data: bytes, audio_level_id: int) -> tuple[bytes, int, int]:
    """Validate ``data`` and strip its header extensions.

    Returns ``(packet, payload_offset, audio_level)`` where ``packet`` has no extension block,
    and ``audio_level`` is the RFC 6464 level (0 = loudest, 127 = silence) found under
    ``audio_level_id`` (0 to skip), or :data:`NO_AUDIO_LEVEL`.
    """
    size = len(data)
    if size < 12:
        raise MalformedPacket("short RTP packet")
    b0 = data[0]
    if b0 >> 6 != 2:
        raise MalformedPacket("bad RTP version")
    pos = 12 + 4 * (b0 & 0x0F)
    level = NO_AUDIO_LEVEL
    if b0 & 0x10:
        if pos + 4 > size:
            raise MalformedPacket("truncated extension header")
        profile, words = struct.unpack_from("!HH", data, pos)
        end = pos + 4 + 4 * words
        if end > size:
            raise MalformedPacket("truncated extension block")
        if audio_level_id:
            level = _find_audio_level(data, pos + 4, end, profile, audio_level_id)
        packet = bytes((b0 & 0xEF,)) + data[1:pos] + data[end:]
    else:
        if pos > size:
            raise MalformedPacket("truncated CSRC list")
        packet = data
    if b0 & 0x20 and (packet[-1] == 0 or packet[-1] > len(packet) - pos):
        raise MalformedPacket("bad padding")
    return packet, pos, level


def _find_audio_level(data: bytes, pos: int, end: int, profile: int, ext_id: int) -> int:
    """Decode the extension element ``ext_id`` as an RFC 6464 audio level."""
    found = _find_element(data, pos, end, profile, ext_id)
    return data[found[0]] & 0x7F if found is not None else NO_AUDIO_LEVEL


def extension_value(data: bytes, ext_id: int) -> bytes | None:
    """The value of header extension element ``ext_id`` in a raw packet, if present.

    For the rare reads outside the hot path (the RID of a new SSRC); raises MalformedPacket.
    """
    if len(data) < 12:
        raise MalformedPacket("short RTP packet")
    if not data[0] & 0x10:
        return None
    pos = 12 + 4 * (data[0] & 0x0F)
    if pos + 4 > len(data):
        raise MalformedPacket("truncated extension header")
    profile, words = struct.unpack_from("!HH", data, pos)
    end = pos + 4 + 4 * words
    if end > len(data):
        raise MalformedPacket("truncated extension block")
    found = _find_element(data, pos + 4, end, profile, ext_id)
    return data[found[0] : found[0] + found[1]] if found is not None else None


def _find_element(
    data: bytes, pos: int, end: int, profile: int, ext_id: int
) -> tuple[int, int] | None:
    """Locate one extension element (RFC 8285): (offset, length) of its value."""
    if profile == _ONE_BYTE_PROFILE:
        while pos < end:
            b = data[pos]
            if b == 0:
                pos += 1
                continue
            eid, length = b >> 4, (b & 0x0F) + 1
            if eid == 15:
                break
            if eid == ext_id and pos + length < end:
                return pos + 1, length
            pos += 1 + length
    elif profile & _TWO_BYTE_PROFILE_MASK == _TWO_BYTE_PROFILE:
        while pos + 1 < end:
            eid = data[pos]
            if eid == 0:
                pos += 1
                continue
            length = data[pos + 1]
            if eid == ext_id and length >= 1 and pos + 1 + length < end:
                return pos + 2, length
            pos += 2 + length
    return None


def unwrap_rtx(packet: bytes, payload_offset: int, payload_type: int, ssrc: int) -> bytes | None:
    """Turn an RFC 4588 retransmission back into the original packet (OSN, apt, SSRC).

    Returns None for padding-only packets, which browsers send on the RTX stream as bandwidth
    probes and which carry no media.
    """
    padding = packet[-1] if packet[0] & 0x20 else 0
    if len(packet) - padding < payload_offset + 2:
        return None
    (osn,) = _U16.unpack_from(packet, payload_offset)
    (timestamp,) = _U32.unpack_from(packet, 4)
    out = bytearray(packet[:payload_offset])
    REWRITE.pack_into(out, 1, (packet[1] & 0x80) | payload_type, osn, timestamp, ssrc)
    return bytes(out) + packet[payload_offset + 2 :]
