"""The dial-in media leg on the SFU alone: mixed audio without one's own voice, the active
speaker's video, and decoding only where a listener needs it."""

from __future__ import annotations

from collections.abc import AsyncIterator
import itertools

import pytest

from bridge.conferences import Conferences, Profile, Via
from bridge.voip.leg import MediaLeg
from demo.waiting import eventually
from sfu import SFU, Event, MediaSettings, TrackKind

from .support.voip_media import CallPeer

_ids = itertools.count()
HEARD = 100.0
"""A tone this far above the spectrum's median is clearly in the mix."""
ABSENT = 0.02
"""An absent tone is below this fraction of the weakest present one (codec leakage only)."""


def hears_only(peer: CallPeer, present: tuple[int, ...], absent: int) -> bool:
    strengths = [peer.hears(frequency) for frequency in present]
    return min(strengths) > HEARD and peer.hears(absent) < ABSENT * min(strengths)


@pytest.fixture(scope="module")
async def sfu_server() -> AsyncIterator[SFU]:
    server = SFU(MediaSettings(bind_addresses=("127.0.0.1",)))
    await server.start()
    yield server
    await server.close()


class Legs:
    def __init__(self, conferences: Conferences, conference_id: str) -> None:
        self.conferences = conferences
        self.conference = conferences.get_or_create(conference_id)
        self.legs: dict[str, MediaLeg] = {}
        self.peers: list[CallPeer] = []

    def on_event(self, event: Event) -> None:
        for leg in self.legs.values():
            leg.on_event(event)

    async def call(self, name: str, frequency: float, amplitude: float, luma: int) -> CallPeer:
        peer = CallPeer(frequency, amplitude, luma)
        self.peers.append(peer)
        profile = Profile(f"@{name}:example.org", "dialin", Via.LEGACY_VOIP)
        leg = MediaLeg(self.conferences, self.conference.id, name, profile)
        self.legs[name] = leg
        await peer.accept_answer(await leg.accept_offer(await peer.offer()))
        return peer


@pytest.fixture
async def legs(sfu_server: SFU) -> AsyncIterator[Legs]:
    conferences = Conferences(sfu_server)
    legs = Legs(conferences, f"voip-{next(_ids)}")
    conferences.listen(legs.conference.id, legs.on_event)
    yield legs
    for peer in legs.peers:
        await peer.close()
    await sfu_server.close_conference(legs.conference.id)


async def test_mix_without_own_voice_and_speaker_video(legs: Legs) -> None:
    alice = await legs.call("alice", 1000, 0.05, luma=120)
    bob = await legs.call("bob", 440, 0.5, luma=60)
    carol = await legs.call("carol", 700, 0.1, luma=190)

    async def everyone_hears_the_others_only() -> bool:
        return (
            hears_only(alice, (440, 700), absent=1000)
            and hears_only(bob, (1000, 700), absent=440)
            and hears_only(carol, (1000, 440), absent=700)
        )

    await eventually(everyone_hears_the_others_only)

    async def alice_sees(luma: int) -> bool:
        seen = alice.sees()
        return seen is not None and abs(seen - luma) < 12

    await eventually(lambda: alice_sees(60))  # bob is loudest
    bob.tone.amplitude, carol.tone.amplitude = 0.01, 0.8
    await eventually(lambda: alice_sees(190))


async def test_lone_listener_decodes_nothing_of_its_own(legs: Legs) -> None:
    await legs.call("alice", 1000, 0.3, luma=120)
    mixer = legs.conference.audio_mixer()
    assert mixer.listeners == ["alice"]
    assert mixer.decoding == []
    await legs.call("bob", 440, 0.3, luma=60)
    audio = {
        t.participant_id: t.track_id for t in legs.conference.tracks if t.kind == TrackKind.AUDIO
    }
    assert sorted(mixer.decoding) == sorted(audio.values())
    await legs.legs["bob"].close("left")
    assert mixer.listeners == ["alice"] and mixer.decoding == []
