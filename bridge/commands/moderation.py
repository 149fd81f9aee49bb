"""Commands for a room's moderators: mute, unmute, remove, end, lock, unlock, moderated and
admit. Each one is answered in the room and recorded in the call history."""

from __future__ import annotations

import re

from mautrix.errors import MatrixError
from mautrix.types import UserID

from sfu import TrackKind

from ..db import RoomModeName
from .handler import CommandError, CommandEvent, command_handler

_USER_ID = re.compile(r"^@[^:\s]+:\S+$")
_KINDS = {
    "audio": frozenset({TrackKind.AUDIO}),
    "video": frozenset({TrackKind.VIDEO}),
    "all": frozenset({TrackKind.AUDIO, TrackKind.VIDEO}),
}
_KIND_NAMES = {"audio": "microphone", "video": "camera", "all": "microphone and camera"}


def _target(evt: CommandEvent) -> UserID:
    if not evt.args:
        raise CommandError("Name the user, e.g. `@someone:example.org`.")
    user_id = evt.args[0]
    if not _USER_ID.match(user_id):
        raise CommandError(f"`{user_id}` is not a Matrix user ID like `@someone:example.org`.")
    return UserID(user_id)


async def _done(evt: CommandEvent, action: str, target: str | None, text: str) -> None:
    await evt.bridge.moderation.record(evt.room_id, evt.sender, action, target, text)
    await evt.reply(text)


@command_handler(
    help_text="Mute someone in the call (audio unless you say otherwise)",
    help_args="<@user> [audio|video|all]",
    moderator=True,
)
async def mute(evt: CommandEvent) -> None:
    target = _target(evt)
    which = evt.args[1].lower() if len(evt.args) > 1 else "audio"
    if which not in _KINDS:
        raise CommandError(f"Mute `audio`, `video` or `all`, not `{which}`.")
    moderation = evt.bridge.moderation
    if not await moderation.mute(evt.room_id, target, _KINDS[which]):
        raise CommandError(f"{target} is not in this room's call.")
    if await moderation.is_moderated(evt.room_id):
        after = (
            "The call is moderated: they cannot unmute themselves until "
            f"`{evt.prefix} unmute {target}`."
        )
    else:
        after = "They can unmute themselves."
    await _done(evt, "mute", target, f"Muted the {_KIND_NAMES[which]} of {target}. {after}")


@command_handler(
    help_text="Let someone muted in a moderated call unmute themselves again",
    help_args="<@user>",
    moderator=True,
)
async def unmute(evt: CommandEvent) -> None:
    target = _target(evt)
    if not await evt.bridge.moderation.release(evt.room_id, target):
        raise CommandError(f"{target} is not held muted in this room's call.")
    await _done(evt, "unmute", target, f"{target} may unmute themselves again.")


@command_handler(
    help_text="Remove someone from the call; they cannot rejoin for a while",
    help_args="<@user> [reason]",
    moderator=True,
)
async def remove(evt: CommandEvent) -> None:
    target = _target(evt)
    reason = " ".join(evt.args[1:]).strip() or "no reason given"
    present = await evt.bridge.moderation.remove(evt.room_id, target, evt.sender, reason)
    minutes = evt.bridge.config["bridge.moderation.removal_minutes"]
    done = "Removed" if present else "Not in the call now, but barred:"
    await _done(
        evt,
        "remove",
        target,
        f"{done} {target} ({reason}). They cannot rejoin this room's call for {minutes} min.",
    )


@command_handler(help_text="End the call for everyone", moderator=True)
async def end(evt: CommandEvent) -> None:
    count = await evt.bridge.moderation.end(evt.room_id)
    if not count:
        raise CommandError("No call is running in this room.")
    await _done(
        evt,
        "end",
        None,
        f"{evt.sender} ended the call; {count} participant{'s' if count != 1 else ''} "
        "disconnected.",
    )


async def _switch(evt: CommandEvent, mode: RoomModeName, on: bool, text: str) -> None:
    changed = await evt.bridge.moderation.set_mode(evt.room_id, mode, on, evt.sender)
    if not changed:
        raise CommandError(f"The call already is {'' if on else 'not '}{mode.value}.")
    await _done(evt, f"{mode.value} {'on' if on else 'off'}", None, text)


@command_handler(help_text="Let no new participants into the call", moderator=True)
async def lock(evt: CommandEvent) -> None:
    await _switch(
        evt,
        RoomModeName.LOCKED,
        True,
        "The call is locked: only those already in it and moderators can join.",
    )


@command_handler(help_text="Let every member of the room join the call again", moderator=True)
async def unlock(evt: CommandEvent) -> None:
    await _switch(evt, RoomModeName.LOCKED, False, "The call is unlocked.")


@command_handler(
    help_text="Switch the moderated mode: those muted by a moderator cannot unmute themselves",
    help_args="<on|off>",
    moderator=True,
)
async def moderated(evt: CommandEvent) -> None:
    choice = evt.args[0].lower() if evt.args else ""
    if choice not in ("on", "off"):
        raise CommandError("Say `on` or `off`.")
    text = (
        "The call is moderated: whom a moderator mutes stays muted until allowed to unmute."
        if choice == "on"
        else "The call is no longer moderated: everyone may unmute themselves."
    )
    await _switch(evt, RoomModeName.MODERATED, choice == "on", text)


@command_handler(
    help_text="Let in someone who knocked on this room (invites them)",
    help_args="<@user>",
    moderator=True,
)
async def admit(evt: CommandEvent) -> None:
    target = _target(evt)
    if not await evt.bridge.moderation.is_knocking(evt.room_id, target):
        raise CommandError(f"{target} has not asked to join this room.")
    try:
        await evt.bridge.az.intent.invite_user(
            evt.room_id, target, reason=f"Admitted by {evt.sender}"
        )
    except MatrixError as e:
        raise CommandError(f"The bridge could not invite {target}: {e}") from e
    await _done(evt, "admit", target, f"Invited {target}: they can join the room now.")
