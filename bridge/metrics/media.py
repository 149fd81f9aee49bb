"""The media plane's metrics, read from its figures when Prometheus scrapes (never per
packet); with media workers, the figures they last reported."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sfu import TrackKind

from ..media import MediaFigures


class MediaCollector(Collector):
    def __init__(self, figures: Callable[[], MediaFigures]) -> None:
        self._figures = figures

    def collect(self) -> Iterator[Metric]:
        figures = self._figures()
        yield GaugeMetricFamily("bridge_conferences", "Conferences open.", figures.conferences)
        yield GaugeMetricFamily(
            "bridge_participants", "Participants in conferences.", figures.participants
        )
        published = GaugeMetricFamily(
            "bridge_published_tracks", "Streams participants publish.", labels=["kind"]
        )
        for kind in TrackKind:
            published.add_metric([kind.value], figures.published(kind))
        yield published
        yield GaugeMetricFamily(
            "bridge_subscriptions",
            "Streams forwarded to subscribers.",
            figures.subscriptions,
        )
        yield GaugeMetricFamily(
            "bridge_connecting_transports",
            "Connections negotiated but not connected yet (media.limits.connecting).",
            figures.connecting,
        )
        totals = figures.counters
        for name, help_text, inbound, outbound in (
            (
                "bridge_media_packets",
                "RTP packets received from publishers (in) and sent to subscribers (out).",
                totals.packets_in,
                totals.packets_out,
            ),
            ("bridge_media_bytes", "RTP bytes, as packets.", totals.bytes_in, totals.bytes_out),
            (
                "bridge_media_packets_lost",
                "Packets lost on the way from publishers (in, by sequence numbers) and to "
                "subscribers (out, as their receiver reports say).",
                totals.lost_in,
                totals.lost_out,
            ),
            (
                "bridge_media_keyframe_requests",
                "Key-frame requests (PLI, FIR) from subscribers (in) and to publishers (out).",
                totals.keyframe_requests_in,
                totals.keyframe_requests_out,
            ),
        ):
            family = CounterMetricFamily(name, help_text, labels=["direction"])
            family.add_metric(["in"], inbound)
            family.add_metric(["out"], outbound)
            yield family
        yield CounterMetricFamily(
            "bridge_media_nacked_packets",
            "Packets subscribers asked for again (NACK).",
            totals.nacked,
        )
        yield CounterMetricFamily(
            "bridge_media_retransmitted_packets",
            "NACKed packets sent again from the SFU's history.",
            totals.retransmitted,
        )
        invalid = CounterMetricFamily(
            "bridge_media_invalid_packets", "Packets dropped as invalid.", labels=["reason"]
        )
        invalid.add_metric(["malformed_rtp"], totals.malformed_rtp)
        invalid.add_metric(["malformed_rtcp"], totals.malformed_rtcp)
        invalid.add_metric(["unknown_ssrc"], totals.unknown_rtp)
        yield invalid
