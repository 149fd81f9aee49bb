"""Simulcast on receive: the SDP aiortc cannot write, and which layer a subscriber gets.

Browsers send simulcast (RFC 8853) as several RTP streams in one media section, each tagged
with a RID header extension (repaired RID for its RTX stream) and no SSRC in the SDP. aiortc
knows neither ``a=rid``/``a=simulcast`` nor the RID extensions: answered by aiortc alone, a
browser keeps only its first (lowest) encoding. Here the offer's simulcast description is read
and the answer is completed so that every offered layer is received.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import re

RID_URI = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
REPAIRED_RID_URI = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
_RID_EXTENSIONS = (RID_URI, REPAIRED_RID_URI)
_MID = re.compile(r"^a=mid:(\S+)", re.MULTILINE)
_EXTMAP = re.compile(r"^a=extmap:(\d+)(?:/\S+)? (\S+)", re.MULTILINE)
_SIMULCAST_SEND = re.compile(r"^a=simulcast:send (\S+)", re.MULTILINE)
_RID_SEND = re.compile(r"^a=rid:(\S+) send", re.MULTILINE)
MAX_LAYERS = 4
"""More encodings than any browser sends; an offer with more is refused."""


@dataclass(frozen=True)
class SimulcastOffer:
    """One media section's simulcast: its layers' RIDs in the order offered (livekit-client
    and Element Call offer them lowest first) and the ids of the RID extensions."""

    rids: tuple[str, ...]
    rid_id: int
    repaired_rid_id: int


def parse_offer(sdp: str) -> dict[str, SimulcastOffer]:
    """Simulcast sections of an offer, by mid. A section whose RID extension is missing is
    left out: its layers could not be told apart."""
    found: dict[str, SimulcastOffer] = {}
    for section in _sections(sdp)[1]:
        mid, simulcast = _MID.search(section), _SIMULCAST_SEND.search(section)
        if mid is None or simulcast is None:
            continue
        declared = set(_RID_SEND.findall(section))
        rids = tuple(
            rid
            for alternatives in simulcast.group(1).split(";")
            # A paused layer is "~rid"; of alternatives "a,b" the first is taken.
            if (rid := alternatives.split(",")[0].lstrip("~")) in declared
        )
        if len(rids) > MAX_LAYERS:
            raise ValueError(f"simulcast with {len(rids)} layers")
        extensions = {uri: int(ext_id) for ext_id, uri in _EXTMAP.findall(section)}
        if rids and RID_URI in extensions:
            found[mid.group(1)] = SimulcastOffer(
                rids, extensions[RID_URI], extensions.get(REPAIRED_RID_URI, 0)
            )
    return found


def complete_answer(offer: str, answer: str) -> str:
    """Add to aiortc's ``answer`` what it leaves out: the RID extensions wherever they were
    offered, and ``a=rid``/``a=simulcast`` receive lines for each simulcast section.

    The extensions matter even without simulcast: Chrome leaves them out of every later offer
    in the BUNDLE once an answer declined them, and then refuses its own offer when a simulcast
    track is added ("negotiates simulcast but does not negotiate the RID RTP header
    extension").
    """
    simulcast = parse_offer(offer)
    offered: dict[str, list[str]] = {}
    for section in _sections(offer)[1]:
        mid = _MID.search(section)
        if mid:
            offered[mid.group(1)] = [
                line
                for line in section.split("\r\n")
                if line.startswith("a=extmap:") and line.split()[1] in _RID_EXTENSIONS
            ]
    head, sections = _sections(answer)
    for index, section in enumerate(sections):
        mid = _MID.search(section)
        if mid is None:
            continue
        lines = [line for line in offered.get(mid.group(1), []) if line not in section]
        layers = simulcast.get(mid.group(1))
        if layers is not None and _accepted(section):
            lines += [f"a=rid:{rid} recv" for rid in layers.rids]
            lines.append(f"a=simulcast:recv {';'.join(layers.rids)}")
        added = "".join(f"\r\n{line}" for line in lines)
        sections[index] = section[: mid.end()] + added + section[mid.end() :]
    return "\r\nm=".join([head, *sections])


def _accepted(section: str) -> bool:
    """Whether the answer takes this media section (not rejected with port 0, not inactive)."""
    return section.split(" ", 2)[1] != "0" and "\r\na=inactive" not in section


def _sections(sdp: str) -> tuple[str, list[str]]:
    head, *sections = sdp.split("\r\nm=")
    return head, sections


# --------------------------------------------------------------------------- layer choice


def choose_layer(sizes: Sequence[tuple[int, int] | None], width: int, height: int) -> int:
    """The smallest layer that fills a ``width`` x ``height`` tile, else the largest.

    ``sizes`` are the layers' (width, height) lowest first, None where unknown. Tiles crop
    video to fill them (object-fit: cover), so a layer must cover both sides. Layers of
    unknown size (no key frame seen yet) are passed over: with none known, the largest wins.
    """
    if not sizes:
        raise ValueError("no layers")
    for index, size in enumerate(sizes):
        if size is not None and size[0] >= width and size[1] >= height:
            return index
    return len(sizes) - 1
