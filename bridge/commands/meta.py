"""Commands about the bridge itself."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version as package_version

from ..version import __version__
from .handler import CommandError, CommandEvent, command_handler, command_handlers


@command_handler(help_text="Show the commands you can use", help_args="[command]")
async def help(evt: CommandEvent) -> None:
    allowed = [handler for handler in command_handlers.values() if await handler.allowed_for(evt)]
    if evt.args:
        wanted = evt.args[0].lower()
        allowed = [handler for handler in allowed if handler.name == wanted]
        if not allowed:
            raise CommandError(f"There is no command `{wanted}` you can use.")
    lines = [f"**Commands** (prefix `{evt.prefix}`):", ""]
    for handler in sorted(allowed, key=lambda h: h.name):
        args = f" {handler.help_args}" if handler.help_args else ""
        lines.append(f"* `{evt.prefix} {handler.name}{args}`: {handler.help_text}")
    await evt.reply("\n".join(lines))


def _version_of(distribution: str) -> str:
    try:
        return package_version(distribution)
    except PackageNotFoundError:
        return "not installed"


@command_handler(help_text="Show the bridge's version")
async def version(evt: CommandEvent) -> None:
    await evt.reply(
        f"**matrix-conference-bridge** {__version__} "
        f"(mautrix {_version_of('mautrix')}, aiortc {_version_of('aiortc')})"
    )
