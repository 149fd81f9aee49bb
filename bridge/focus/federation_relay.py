"""A local user's token for another homeserver's SFU, asked for over federation.

When a client names a ``server_name`` other than ours (the call's focus is hosted there), the
bridge asks that server's ``…/rtc/livekit/get_token`` federation route for the user, through
its own homeserver's ``fed_proxy`` (MSC4512), which signs the request as this server. Only
routes under the claimed prefix can be reached that way. The answer, or the remote server's
refusal, goes back to the client as it came.
"""

from __future__ import annotations

from typing import Any
import logging

from yarl import URL
import aiohttp

from .errors import FocusError

log = logging.getLogger("mau.focus.relay")

FED_PROXY_PATH = "_matrix/client/unstable/io.element.msc4512/appservice/fed_proxy"
REMOTE_PATH = "/_matrix/federation/unstable/io.element.msc4195/rtc/livekit/get_token"
TIMEOUT_S = 30.0
MAX_BODY = 64 * 1024


class Relayed(FocusError):
    """The remote server's (or our homeserver's) refusal, passed on."""

    def __init__(self, status: int, errcode: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.errcode = errcode


def _error(status: int, content: Any, fallback: str) -> Relayed:
    if isinstance(content, dict) and isinstance(content.get("errcode"), str):
        return Relayed(status, content["errcode"], str(content.get("error", fallback)))
    return Relayed(status, "M_UNKNOWN", fallback)


class FederationRelay:
    def __init__(self, session: aiohttp.ClientSession, homeserver: URL, as_token: str) -> None:
        self.session = session
        self.homeserver = homeserver
        self._as_token = as_token

    async def get_token(self, server_name: str, body: dict[str, Any]) -> str:
        """The JWT ``server_name`` issues for ``body`` (the federation request's fields).

        Raises:
            Relayed: the remote server, or our homeserver, refused; its status and errcode.
        """
        request = {"destination": server_name, "method": "POST", "path": REMOTE_PATH, "body": body}
        try:
            async with self.session.post(
                self.homeserver.joinpath(FED_PROXY_PATH),
                json=request,
                headers={"Authorization": f"Bearer {self._as_token}"},
                timeout=aiohttp.ClientTimeout(total=TIMEOUT_S),
            ) as response:
                status = response.status
                answer = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            log.warning("Relaying a token request to %s failed: %s", server_name, e)
            raise Relayed(502, "M_UNKNOWN", f"Could not reach {server_name}.") from e
        if status != 200:
            raise _error(status, answer, f"The homeserver refused to relay to {server_name}.")
        if not isinstance(answer, dict):
            raise Relayed(502, "M_UNKNOWN", f"The homeserver's relay to {server_name} failed.")
        remote_status, content = answer.get("status"), answer.get("content")
        if remote_status == 200 and isinstance(content, dict):
            jwt = content.get("jwt")
            if isinstance(jwt, str):
                return jwt
        if isinstance(remote_status, int) and 400 <= remote_status < 600:
            raise _error(remote_status, content, f"{server_name} refused the token request.")
        raise Relayed(502, "M_UNKNOWN", f"{server_name} gave no token.")
