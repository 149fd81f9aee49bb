"""The MSC4195 routes the homeserver forwards to the appservice (MSC4512), served beside the
appservice API: Synapse authenticates the caller and passes the request on with the
appservice's ``hs_token`` and the caller's identity in a header, so neither OpenID nor the
focus's public listener is involved.

* ``POST /_matrix/client/{version}/rtc/livekit/get_token``: a token for the local user named
  by ``X-Matrix-User-Identifier`` (from another homeserver's SFU when the client names that
  server: :mod:`.federation_relay`);
* ``POST /_matrix/client/{version}/rtc/livekit/delegate_delayed_leave``: the bridge takes over
  that user's delayed leave event (:mod:`.delegated_leave`);
* ``POST /_matrix/federation/{version}/rtc/livekit/get_token``: a token for a user of the
  homeserver named by ``X-Matrix-Origin`` (whose signature Synapse checked), subscribe only.

The identity headers are trusted only on requests with the right ``hs_token``: anyone else
could write any user ID there. The same room checks apply as on the focus's own routes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from collections.abc import Awaitable, Callable
import hmac
import logging

from aiohttp import web
from mautrix.types import RoomID, UserID
from yarl import URL

from ..db import Room
from ..metrics.instruments import counts_token_requests
from .errors import (
    BadJSON,
    FocusError,
    Forbidden,
    InvalidParam,
    MissingToken,
    NotReady,
    UnknownToken,
)
from .federation_relay import FederationRelay
from .http import MAX_BODY, error_response, matrix_error
from .livekit_ids import identity_for, legacy_identity_for
from .requests import (
    MemberRequest,
    parse_delegate_delayed_leave,
    parse_federation_get_token,
    parse_proxied_get_token,
)

if TYPE_CHECKING:
    from .service import Focus

log = logging.getLogger("mau.focus.proxied")

PROXY_PREFIX = "rtc/livekit"
VERSIONS = ("unstable/io.element.msc4195", "v1")
"""The unstable prefix clients and homeservers use today, and the version MSC4195 proposes."""
USER_HEADER = "X-Matrix-User-Identifier"
ORIGIN_HEADER = "X-Matrix-Origin"

_SCHEMES = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}


def same_sfu(url: str, signalling_url: str) -> bool:
    """Whether ``url`` (a client's chosen transport, ``https://`` or ``wss://``) names this
    focus's signalling URL."""

    def key(text: str) -> tuple[str, str, int | None, str] | None:
        try:
            parsed = URL(text)
        except ValueError:
            return None
        scheme = _SCHEMES.get(parsed.scheme)
        if scheme is None or not parsed.host:
            return None
        default = 443 if scheme == "wss" else 80
        port = parsed.explicit_port or default
        return scheme, parsed.host.lower(), port, parsed.path.rstrip("/")

    ours = key(signalling_url)
    return ours is not None and key(url) == ours


class ProxiedRoutes:
    def __init__(self, focus: Focus, hs_token: str, server_name: str) -> None:
        self.focus = focus
        self._hs_token = hs_token.encode()
        self.server_name = server_name

    def add_to(self, app: web.Application) -> None:
        for version in VERSIONS:
            client = f"/_matrix/client/{version}/{PROXY_PREFIX}"
            app.router.add_post(
                f"{client}/get_token", counts_token_requests(self._wrap(self.get_token))
            )
            app.router.add_post(
                f"{client}/delegate_delayed_leave", self._wrap(self.delegate_delayed_leave)
            )
            federation = f"/_matrix/federation/{version}/{PROXY_PREFIX}"
            app.router.add_post(
                f"{federation}/get_token",
                counts_token_requests(self._wrap(self.federation_get_token)),
            )

    def _wrap(
        self, handler: Callable[[web.Request, bytes], Awaitable[dict[str, str]]]
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def answer(request: web.Request) -> web.Response:
            try:
                self._check_hs_token(request)
                body = await request.read()
                if len(body) > MAX_BODY:  # the appservice listener allows transactions more
                    raise web.HTTPRequestEntityTooLarge(MAX_BODY, len(body))
                return web.json_response(await handler(request, body))
            except web.HTTPRequestEntityTooLarge:
                return matrix_error(413, "M_TOO_LARGE", f"The body is over {MAX_BODY} bytes.")
            except FocusError as e:
                log.debug("Refused a forwarded request to %s: %s", request.path, e.message)
                return error_response(e)
            except Exception:
                log.exception("Forwarded request to %s failed", request.path)
                return matrix_error(500, "M_UNKNOWN", "The focus failed to answer; try again.")

        return answer

    def _check_hs_token(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise MissingToken("Forwarded requests must carry the homeserver's token.")
        if not hmac.compare_digest(token.strip().encode(), self._hs_token):
            raise UnknownToken("The token is not this appservice's hs_token.")

    def _local_caller(self, request: web.Request, body: MemberRequest) -> UserID:
        user_id = request.headers.get(USER_HEADER, "")
        if not user_id.startswith("@") or user_id.partition(":")[2] != self.server_name:
            raise Forbidden(f"{USER_HEADER} must name a user of {self.server_name}.")
        if body.claimed_user_id is not None and body.claimed_user_id != user_id:
            raise Forbidden("`member.claimed_user_id` is another user than the caller.")
        return UserID(user_id)

    def _check_url(self, body: MemberRequest) -> None:
        if body.url is not None and not same_sfu(body.url, self.focus.signalling_url):
            raise InvalidParam("This focus serves another SFU than `url`.")

    async def get_token(self, request: web.Request, raw: bytes) -> dict[str, str]:
        body = parse_proxied_get_token(raw)
        user_id = self._local_caller(request, body)
        service, relay = self.focus.service, self.focus.relay
        if service is None or relay is None:
            raise NotReady("The focus is starting; try again.")
        if body.server_name is not None and body.server_name != self.server_name:
            return await self._relay(relay, user_id, body, body.server_name)
        self._check_url(body)
        return await service.grant(
            user_id, body.room_id, body.slot_id, body.device_id, body.member_id
        )

    async def _relay(
        self, relay: FederationRelay, user_id: UserID, body: MemberRequest, server_name: str
    ) -> dict[str, str]:
        """The call's focus is another homeserver's: ask it for the user, over federation."""
        if body.url is None:
            raise BadJSON("`url` (the SFU) is needed to ask another homeserver for a token.")
        log.info("Asking %s for a token for %s in %s", server_name, user_id, body.room_id)
        jwt = await relay.get_token(
            server_name,
            {
                "url": body.url,
                "user_id": user_id,
                "room_id": body.room_id,
                "slot_id": body.slot_id,
                "member": {"id": body.member_id, "claimed_device_id": body.device_id},
            },
        )
        return {"url": body.url, "jwt": jwt}

    async def federation_get_token(self, request: web.Request, raw: bytes) -> dict[str, str]:
        body = parse_federation_get_token(raw)
        origin = request.headers.get(ORIGIN_HEADER, "")
        user_id = body.user_id or ""
        if not origin or not user_id.startswith("@") or user_id.partition(":")[2] != origin:
            raise Forbidden(f"`user_id` must be a user of the requesting server ({origin}).")
        if body.claimed_user_id is not None and body.claimed_user_id != user_id:
            raise Forbidden("`member.claimed_user_id` is another user than `user_id`.")
        self._check_url(body)
        service = self.focus.service
        if service is None:
            raise NotReady("The focus is starting; try again.")
        response = await service.grant(
            UserID(user_id),
            body.room_id,
            body.slot_id,
            body.device_id,
            body.member_id,
            over_federation=True,
        )
        return {"jwt": response["jwt"]}

    async def delegate_delayed_leave(self, request: web.Request, raw: bytes) -> dict[str, str]:
        body = parse_delegate_delayed_leave(raw)
        user_id = self._local_caller(request, body)
        self._check_url(body)
        if self.focus.service is None:
            raise NotReady("The focus is starting; try again.")
        await self.focus.access.check(body.room_id, user_id)
        assert body.delay_id is not None
        room = await Room.get_or_create(RoomID(body.room_id))
        await self.focus.delegation.delegate(
            conference_id=room.conference_id,
            identity=identity_for(user_id, body.device_id, body.member_id),
            legacy_identity=legacy_identity_for(user_id, body.device_id),
            user_id=user_id,
            delay_id=body.delay_id,
            delay_s=None if body.delay_timeout_ms is None else body.delay_timeout_ms / 1000,
        )
        return {}
