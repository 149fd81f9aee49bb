"""The media in the bridge's own process (``media.workers: 0``): one engine, called directly."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from sfu import MediaSettings, SeamError

from ..livekit.protocol import MAX_MESSAGE_BYTES
from .engine import MediaEngine
from .errors import StartupError
from .plane import MediaFigures, MediaPlane

if TYPE_CHECKING:
    from ..focus.tokens import FocusTokens
    from ..livekit.host import Admission


class LocalPlane(MediaPlane):
    def __init__(self, settings: MediaSettings, empty_grace_s: float, resume_grace_s: float):
        super().__init__()
        self.engine = MediaEngine(
            settings, self.roster.apply, self.may_publish, empty_grace_s, resume_grace_s
        )

    async def start(self) -> None:
        await start_sfu(self.engine)

    async def end_sessions(self) -> None:
        await self.engine.livekit.stop()

    async def close(self) -> None:
        await self.engine.stop()

    def use_tokens(self, tokens: FocusTokens) -> None:
        self.engine.livekit.tokens = tokens

    def figures(self) -> MediaFigures:
        return self.engine.figures()

    def accepts_newcomers(self, conference_id: str) -> bool:
        return self.engine.sfu.accepts_newcomers()

    async def serve_signalling(
        self, request: web.Request, admission: Admission
    ) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES)
        await ws.prepare(request)
        await self.engine.livekit.run(ws, admission)
        return ws

    async def command(self, conference_id: str, name: str, **args: Any) -> Any:
        return await self.engine.command(conference_id, name, args)


async def start_sfu(engine: MediaEngine) -> None:
    """Start an engine's SFU; what stops it names the key to fix."""
    try:
        await engine.sfu.start()
    except SeamError as e:
        raise StartupError(f"this aiortc version is not supported: {e}") from e
    except OSError as e:
        raise StartupError(f"media.udp_port: {e.strerror}") from e
