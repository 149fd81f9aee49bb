"""The bridge's requests to restart and send a delayed event, against a stand-in homeserver on
loopback: what each answer means to the schedule, and that no credentials are sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiohttp import web
from yarl import URL
import aiohttp
import pytest

from bridge.focus.delayed_events import DelayedEvents
from bridge.focus.leave_schedule import Answer, Outcome
from demo.loopback_http import serve
from demo.ports import free_port


@dataclass
class Homeserver:
    """Answers each delayed-event request with the next scripted response."""

    responses: list[web.Response] = field(default_factory=list)
    seen: list[tuple[str, str | None]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append((request.raw_path, request.headers.get("Authorization")))
        return self.responses.pop(0)


@pytest.fixture
async def homeserver() -> AsyncIterator[tuple[Homeserver, DelayedEvents]]:
    fake = Homeserver()
    app = web.Application()
    app.router.add_post(
        "/_matrix/client/unstable/org.matrix.msc4140/delayed_events/{delay_id}/{action}",
        fake.handle,
    )
    async with serve(app) as url, aiohttp.ClientSession() as session:
        yield fake, DelayedEvents(session, URL(url))


def limit(headers: dict[str, str] | None = None, **body: object) -> web.Response:
    return web.json_response({"errcode": "M_LIMIT_EXCEEDED", **body}, status=429, headers=headers)


async def test_answers_map_to_what_the_schedule_does(
    homeserver: tuple[Homeserver, DelayedEvents],
) -> None:
    fake, events = homeserver
    fake.responses = [
        web.json_response({}),
        web.json_response({"errcode": "M_NOT_FOUND"}, status=404),
        limit({"Retry-After": "3"}, retry_after_ms=9000),
        limit(retry_after_ms=1500),
        limit({"Retry-After": "soon"}),
        web.json_response({"errcode": "M_UNKNOWN"}, status=502),
        web.Response(status=400, text="not json"),
    ]
    answers = [await events.act("syd_abc", "send") for _ in range(len(fake.responses))]
    assert answers == [
        Answer(Outcome.OK),
        Answer(Outcome.NOT_FOUND),
        Answer(Outcome.RETRY, 3.0),  # the header wins over the body
        Answer(Outcome.RETRY, 1.5),
        Answer(Outcome.RETRY, None),
        Answer(Outcome.RETRY),
        Answer(Outcome.RETRY),
    ]


async def test_the_delay_id_is_the_only_credential_and_is_quoted(
    homeserver: tuple[Homeserver, DelayedEvents],
) -> None:
    fake, events = homeserver
    fake.responses = [web.json_response({})]
    assert await events.act("syd/../x?y", "restart") == Answer(Outcome.OK)
    path, authorization = fake.seen[0]
    assert path == (
        "/_matrix/client/unstable/org.matrix.msc4140/delayed_events/syd%2F..%2Fx%3Fy/restart"
    )
    assert authorization is None


async def test_an_unreachable_homeserver_is_retried() -> None:
    async with aiohttp.ClientSession() as session:
        events = DelayedEvents(session, URL(f"http://127.0.0.1:{free_port()}"))
        assert await events.act("syd_abc", "restart") == Answer(Outcome.RETRY)
