"""How a connection request says it joins or resumes (pure parsing, no server)."""

from __future__ import annotations

import base64

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from livekit.protocol import rtc
from yarl import URL

from bridge.livekit.protocol import connect_request


def request(path: str, **query: str) -> web.Request:
    return make_mocked_request("GET", str(URL(path).with_query(query)))


def test_v0_resume_names_the_participant() -> None:
    resume = connect_request(
        request("/rtc", access_token="t", reconnect="1", sid="PA_a"), single_pc=False
    )
    join = connect_request(request("/rtc", access_token="t", sid="PA_a"), single_pc=False)
    unnamed = connect_request(request("/rtc", access_token="t", reconnect="1"), single_pc=False)
    assert (resume.resume_sid, join.resume_sid, unnamed.resume_sid) == ("PA_a", None, "")


def test_v1_resume_comes_in_the_join_request() -> None:
    def v1(join_request: rtc.JoinRequest) -> str | None:
        wrapped = rtc.WrappedJoinRequest(join_request=join_request.SerializeToString())
        encoded = base64.urlsafe_b64encode(wrapped.SerializeToString()).decode().rstrip("=")
        return connect_request(
            request("/rtc/v1", access_token="t", join_request=encoded), single_pc=True
        ).resume_sid

    assert v1(rtc.JoinRequest(reconnect=True, participant_sid="PA_b")) == "PA_b"
    assert v1(rtc.JoinRequest(participant_sid="PA_b")) is None
