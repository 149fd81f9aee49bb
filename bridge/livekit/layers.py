"""LiveKit's simulcast vocabulary and the SFU's layers: qualities, RIDs, announced layers.

livekit-client names its encodings ``q``, ``h``, ``f`` from the lowest up and describes them in
``add_track`` as ``VideoLayer``s by quality (LOW, MEDIUM, HIGH). The SFU knows a track's layers
by the RIDs it actually receives.
"""

from __future__ import annotations

from collections.abc import Sequence

from livekit.protocol import models

QUALITY_RIDS = ("q", "h", "f")
"""The RID livekit-client gives the encoding of each quality (LOW, MEDIUM, HIGH)."""


def layer_rid(layer: models.VideoLayer) -> str:
    return layer.rid or QUALITY_RIDS[min(layer.quality, len(QUALITY_RIDS) - 1)]


def arriving_layers(
    requested: Sequence[models.VideoLayer], rids: Sequence[str]
) -> list[models.VideoLayer]:
    """The layers of an ``add_track`` that the SFU receives, lowest first, with their RIDs.

    Without simulcast (``rids`` empty) a browser sends only its first encoding, the lowest.
    """
    ordered = sorted(requested, key=lambda layer: layer.quality)
    kept = [layer for layer in ordered if layer_rid(layer) in rids] if rids else ordered[:1]
    result = []
    for layer in kept:
        copy = models.VideoLayer()
        copy.CopyFrom(layer)
        if rids:
            copy.rid = layer_rid(layer)
        result.append(copy)
    return result


def quality_layer(rids: Sequence[str], quality: int) -> int:
    """The SFU layer index for a LiveKit quality: the highest layer not above it."""
    best = 0
    for index, rid in enumerate(rids):
        if rid in QUALITY_RIDS and QUALITY_RIDS.index(rid) <= quality:
            best = index
    return best
