"""Guest links for a room's moderators: create, list and revoke. Each one is answered in the
room and recorded in the call history (without the link's secret)."""

from __future__ import annotations

from datetime import UTC, datetime
import time

from ..db import GuestLink
from .handler import CommandError, CommandEvent, command_handler


def _until(timestamp_ms: int) -> str:
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


async def _record(evt: CommandEvent, action: str, link_id: str, text: str) -> None:
    await evt.bridge.moderation.record(evt.room_id, evt.sender, action, link_id, text)


def _switched_on(evt: CommandEvent) -> None:
    if not evt.bridge.guests.settings.enabled:
        raise CommandError("Guest links are switched off on this bridge.")


@command_handler(
    help_text="Create a link for guests without a Matrix account to join this room's call",
    help_args="[hours]",
    moderator=True,
)
async def guestlink(evt: CommandEvent) -> None:
    _switched_on(evt)
    try:
        link, url = await evt.bridge.guests.create_link(
            evt.room_id, evt.sender, evt.args[0] if evt.args else None
        )
    except ValueError as e:
        raise CommandError(str(e)) from e
    until = _until(link.expires_at)
    await _record(
        evt, "guestlink", link.link_id, f"Created guest link {link.link_id} (until {until})."
    )
    await evt.reply(
        f"Guest link `{link.link_id}`, valid until {until}: {url}\n\n"
        "Whoever opens it can join this room's call as a guest, under a name of their choice. "
        f"Revoke it with `{evt.prefix} revoke {link.link_id}`."
    )


@command_handler(help_text="List this room's guest links", moderator=True)
async def guestlinks(evt: CommandEvent) -> None:
    links = await GuestLink.live_in(evt.room_id, int(time.time() * 1000))
    if not links:
        await evt.reply(f"This room has no guest links. Create one with `{evt.prefix} guestlink`.")
        return
    lines = ["**Guest links of this room:**", ""]
    for link in links:
        uses = f"used {link.uses} time{'s' if link.uses != 1 else ''}"
        lines.append(
            f"* `{link.link_id}` by {link.created_by}, until {_until(link.expires_at)}, {uses}"
        )
    await evt.reply("\n".join(lines))


@command_handler(help_text="Revoke a guest link", help_args="<link id>", moderator=True)
async def revoke(evt: CommandEvent) -> None:
    if not evt.args:
        raise CommandError(f"Name the link, as `{evt.prefix} guestlinks` lists it.")
    link_id = evt.args[0]
    if not await GuestLink.revoke(evt.room_id, link_id, int(time.time() * 1000)):
        raise CommandError(f"This room has no live guest link `{link_id}`.")
    text = (
        f"Revoked guest link `{link_id}`: nobody else can join through it. Guests already in "
        f"the call stay; `{evt.prefix} remove` removes one."
    )
    await _record(evt, "revoke", link_id, f"Revoked guest link {link_id}.")
    await evt.reply(text)
