"""LiveKit's layer vocabulary against the SFU's: which announced layers arrive, and the layer a
requested quality means."""

from __future__ import annotations

from livekit.protocol import models
import pytest

from bridge.livekit.layers import arriving_layers, quality_layer

LOW, MEDIUM, HIGH = models.VideoQuality.LOW, models.VideoQuality.MEDIUM, models.VideoQuality.HIGH


def element_call_layers() -> list[models.VideoLayer]:
    """As livekit-client announces a 720p camera in add_track (highest first here)."""
    return [
        models.VideoLayer(quality=HIGH, width=1280, height=720, bitrate=1_700_000),
        models.VideoLayer(quality=MEDIUM, width=640, height=360, bitrate=450_000),
        models.VideoLayer(quality=LOW, width=320, height=180, bitrate=160_000),
    ]


def test_all_layers_received() -> None:
    layers = arriving_layers(element_call_layers(), ("q", "h", "f"))
    assert [(layer.rid, layer.width) for layer in layers] == [("q", 320), ("h", 640), ("f", 1280)]


def test_only_the_layers_received_are_announced() -> None:
    layers = arriving_layers(element_call_layers(), ("q", "h"))
    assert [(layer.quality, layer.rid) for layer in layers] == [(LOW, "q"), (MEDIUM, "h")]


def test_without_simulcast_only_the_first_encoding_arrives() -> None:
    layers = arriving_layers(element_call_layers(), ())
    assert [(layer.quality, layer.width, layer.rid) for layer in layers] == [(LOW, 320, "")]
    assert arriving_layers([], ()) == []


def test_the_request_is_not_modified() -> None:
    requested = element_call_layers()
    arriving_layers(requested, ("q", "h", "f"))
    assert all(layer.rid == "" for layer in requested)


@pytest.mark.parametrize(
    ("rids", "quality", "index"),
    [
        (("q", "h", "f"), LOW, 0),
        (("q", "h", "f"), MEDIUM, 1),
        (("q", "h", "f"), HIGH, 2),
        (("q", "h"), HIGH, 1),  # the best there is below the quality asked for
        (("h", "f"), LOW, 0),  # nothing that low: the lowest
        ((), HIGH, 0),  # a single stream
    ],
)
def test_quality_to_layer(rids: tuple[str, ...], quality: int, index: int) -> None:
    assert quality_layer(rids, quality) == index
