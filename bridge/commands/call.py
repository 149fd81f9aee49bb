"""Commands about this room's call."""

from __future__ import annotations

from datetime import UTC, datetime

from ..conferences import Via
from ..db import Call, ModerationAction, Room, RoomMode, RoomModeName
from .handler import CommandEvent, command_handler

_VIA = {Via.MATRIXRTC: "Element Call", Via.LEGACY_VOIP: "dial-in"}


def _when(timestamp_ms: int) -> str:
    return datetime.fromtimestamp(timestamp_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


@command_handler(help_text="Show this room's conference and call")
async def status(evt: CommandEvent) -> None:
    room = await Room.get(evt.room_id)
    if room is None:
        await evt.reply("This room has no conference yet.")
        return
    lines = [f"Conference `{room.conference_id}`."]
    active = await Call.get_active(evt.room_id)
    if active is not None:
        lines.append(
            f"A call is running since {_when(active.started_at)}, "
            f"with up to {active.max_participants} participants so far."
        )
        present = evt.bridge.calls.participants(evt.room_id)
        if present:
            lines.append("\n\nIn the call now:\n")
            lines.extend(f"\n* {p.user_id} ({_VIA[p.via]})" for p in present)
        actions = await ModerationAction.of_call(active.call_id)
        if actions:
            lines.append("\n\nModerators in this call:\n")
            lines.extend(f"\n* {a.actor}: {a.action} {a.target or ''}".rstrip() for a in actions)
    else:
        lines.append("No call is running.")
        last = await Call.get_last_ended(evt.room_id)
        if last is not None and last.ended_at is not None:
            lines.append(
                f"The last call ended {_when(last.ended_at)} "
                f"({last.max_participants} participants)."
            )
    modes = [mode.value for mode in RoomModeName if await RoomMode.is_on(evt.room_id, mode)]
    if modes:
        lines.append(f"\n\nThe call is {' and '.join(modes)}.")
    await evt.reply(" ".join(lines))
