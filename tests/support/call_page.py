"""The call page (``web/call.html``, built on livekit-client) in headless Chromium: open it for
a user in a room's call, read what it receives."""

from __future__ import annotations

from typing import Any

from mautrix.types import RoomID
from playwright.async_api import Browser, Page
from yarl import URL

from demo.bridge_process import BridgeProcess
from demo.synapse import MatrixUser, Synapse
from demo.waiting import eventually

from .browser import http_through_this_machine


async def open_call(
    browser: Browser,
    pages_url: str,
    bridge: BridgeProcess,
    synapse: Synapse,
    user: MatrixUser,
    room_id: RoomID,
    e2ee_key: str | None,
    signal: str,
    signal_paths: list[str],
    *,
    namespaced: bool = False,
    **options: str,
) -> Page:
    """The call page; the paths of the signalling WebSockets it opens go to ``signal_paths``
    (livekit-client falls back from v1 to v0 silently). ``options`` are more of the page's
    parameters (see ``web/call.js``). ``namespaced``: ``browser`` runs in a network namespace
    (see :func:`tests.support.browser.chromium`)."""
    params = {
        "hs": synapse.base_url,
        "token": user.access_token,
        "user": user.user_id,
        "device": user.device_id,
        "room": room_id,
        "focus": bridge.focus_url,
    }
    if e2ee_key:
        params["e2ee"] = e2ee_key
    if signal == "v0":
        params["signal"] = signal
    params.update(options)
    context = await browser.new_context()
    if namespaced:
        await http_through_this_machine(context)
    page = await context.new_page()
    page.on("websocket", lambda socket: signal_paths.append(URL(socket.url).path))
    await page.goto(str(URL(f"{pages_url}/call.html").with_query(params)))
    await page.wait_for_function("typeof window.callState === 'function'")
    return page


async def state(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = await page.evaluate("window.callState()")
    return result


async def show_remote_video(page: Page, width: int) -> None:
    """Lay the remote tiles out ``width`` CSS pixels wide, 16:9; adaptiveStream reports the
    new size to the SFU."""
    await page.evaluate(
        """(width) => {
            const tiles = document.getElementById("tiles");
            tiles.style.display = "block";
            for (const tile of tiles.children) tile.style.width = `${width}px`;
        }""",
        width,
    )


async def wait_for_video_size(page: Page, identity: str, size: tuple[int, int]) -> None:
    """Until the remote video from ``identity`` decodes at ``size``."""
    seen: list[object] = []

    async def probe() -> bool:
        remote = (await state(page))["remotes"].get(identity, {})
        seen[:] = [remote]
        return (remote.get("videoWidth"), remote.get("videoHeight")) == size

    try:
        await eventually(probe, timeout=90)
    except AssertionError as e:
        raise AssertionError(f"no {size} video from {identity}: {seen}") from e
