"""From a token request to ``{"url", "jwt"}``: who is calling, may they join, what may they do."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
import logging

from mautrix.types import RoomID, UserID

from .access import RoomAccess
from .errors import Unauthorized
from .livekit_ids import identity_for, legacy_identity_for, room_alias_for
from .openid import OpenIDVerifier
from .requests import TokenRequest
from .tokens import FocusGrant, FocusTokens, VideoGrants

log = logging.getLogger("mau.focus.tokens")

MediaUrl = Callable[[RoomID], Awaitable[str | None]]


class TokenService:
    def __init__(
        self,
        verifier: OpenIDVerifier,
        access: RoomAccess,
        tokens: FocusTokens,
        signalling_url: str,
        server_name: str,
        media_url: MediaUrl | None = None,
    ) -> None:
        """``server_name``: our homeserver's; its users are the ones who publish here.
        ``media_url``: where a room's clients connect instead of ``signalling_url`` (the media
        node carrying its call), if anywhere."""
        self.verifier = verifier
        self.access = access
        self.tokens = tokens
        self.signalling_url = signalling_url
        self.server_name = server_name
        self.media_url = media_url

    async def answer(self, request: TokenRequest) -> dict[str, str]:
        """The token response, or a :class:`~.errors.FocusError` saying why not."""
        user_id = await self.verifier.verify(request.openid_token)
        if request.claimed_user_id is not None and request.claimed_user_id != user_id:
            raise Unauthorized("The OpenID token belongs to another user than `claimed_user_id`.")
        return await self.grant(
            user_id, request.room_id, request.slot_id, request.device_id, request.member_id
        )

    async def grant(
        self,
        user_id: UserID,
        room_id: RoomID,
        slot_id: str,
        device_id: str,
        member_id: str | None,
        *,
        over_federation: bool = False,
    ) -> dict[str, str]:
        """The token response for a caller already known to be ``user_id``;
        ``over_federation``: asked for by the user's homeserver on their behalf.

        Users of other homeservers may only watch and listen (MSC4195: remote users get no
        publish grant): in a multi-SFU call each member publishes to their own homeserver's
        focus, and subscribes to the others'. So no operator carries, or answers for, the
        media of another's users.
        """
        allowed = await self.access.check(room_id, user_id)
        remote = over_federation or user_id.partition(":")[2] != self.server_name
        if member_id is None:
            identity = legacy_identity_for(user_id, device_id)
        else:
            identity = identity_for(user_id, device_id, member_id)
        can_publish = allowed.can_publish and not remote
        grant = FocusGrant(
            identity=identity,
            user_id=user_id,
            device_id=device_id,
            room_id=room_id,
            slot_id=slot_id,
            video=VideoGrants(
                room=room_alias_for(room_id, slot_id),
                can_publish=can_publish,
                can_subscribe=allowed.can_subscribe,
            ),
        )
        log.info(
            "Token for %s (device %s) in %s%s",
            user_id,
            device_id,
            room_id,
            "" if can_publish else ", subscribe only",
        )
        url = await self.media_url(room_id) if self.media_url is not None else None
        return {"url": url or self.signalling_url, "jwt": self.tokens.issue(grant)}
