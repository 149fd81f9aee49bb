"""The SFU entry point: start-up checks and the registry of conferences of one process."""

from __future__ import annotations

from dataclasses import replace

from . import aiortc_seams as seams
from .conference import Conference
from .config import MediaSettings
from .events import EventHandler
from .stats import MediaCounters
from .udp_mux import UdpMux


class SFU:
    """Owns the conferences of one media worker (one asyncio loop, one core)."""

    def __init__(self, settings: MediaSettings | None = None) -> None:
        self.settings = settings or MediaSettings()
        self._conferences: dict[str, Conference] = {}
        self._retired = MediaCounters()
        """What conferences' tracks and participants counted before they went."""
        self._started = False
        self.udp_mux: UdpMux | None = None
        """The shared sockets of the single-port mode (:attr:`MediaSettings.single_port`)."""

    async def start(self) -> None:
        """Verify aiortc's private seams (raises ``SeamError``), apply process settings and
        bind the shared media port (raises ``OSError``)."""
        await seams.self_test()
        seams.configure_consent(self.settings)
        if self.settings.single_port and self.udp_mux is None:
            mux = UdpMux()
            addresses = self.settings.bind_addresses or seams.host_addresses()
            configured = bool(self.settings.bind_addresses)
            mux.open(addresses, self.settings.udp_port or 0, skip_unusable=not configured)
            self.udp_mux = mux
        self._started = True

    def create_conference(
        self, conference_id: str, on_event: EventHandler | None = None
    ) -> Conference:
        if not self._started:
            raise RuntimeError("SFU.start() has not run")
        if conference_id in self._conferences:
            raise ValueError(f"conference {conference_id} exists")
        conference = Conference(
            conference_id, self.settings, on_event, self._retired, self.udp_mux
        )
        self._conferences[conference_id] = conference
        return conference

    def conference(self, conference_id: str) -> Conference | None:
        return self._conferences.get(conference_id)

    @property
    def conferences(self) -> list[Conference]:
        return list(self._conferences.values())

    def connecting_transports(self) -> int:
        """Transports negotiated but not yet connected, in every conference."""
        return sum(
            1
            for conference in self._conferences.values()
            for participant in conference.participants
            for transport in participant.transports
            if transport.connecting
        )

    def accepts_newcomers(self) -> bool:
        """False while :attr:`MediaSettings.max_connecting_transports` are connecting: adapters
        refuse new participants then (each costs ICE checks and a port until it connects)."""
        return self.connecting_transports() < self.settings.max_connecting_transports

    def media_counters(self) -> MediaCounters:
        """Totals since start, for monitoring: added up now from every live track, transport
        and subscription, and what those gone had counted."""
        totals = replace(self._retired)
        for conference in self._conferences.values():
            totals.add_conference(conference)
        return totals

    async def close_conference(self, conference_id: str) -> None:
        conference = self._conferences.pop(conference_id, None)
        if conference is not None:
            await conference.close()

    async def close(self) -> None:
        for conference_id in list(self._conferences):
            await self.close_conference(conference_id)
        if self.udp_mux is not None:
            self.udp_mux.close()
            self.udp_mux = None
        self._started = False
