"""Headless Chromium (Debian's package) driven by Playwright, for the call page in ``web/``
(served by :func:`demo.web.web_pages`).

Chromium gets fake camera and microphone devices, offers loopback ICE candidates only with
``--allow-loopback-in-peer-connection``, and is kept from contacting anything on its own. It can
run inside a network namespace (:mod:`tests.support.netns`), as a browser behind a link of its
own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
import shlex
import shutil
import tempfile

from playwright.async_api import Browser, BrowserContext, Route, async_playwright

from .netns import Namespace

CHROMIUM_ARGS = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # One list (Chromium reads only the last --disable-features): real addresses in ICE, and
    # a page from loopback may open a WebSocket to a namespace's private address.
    "--disable-features=WebRtcHideLocalIpsWithMdns,LocalNetworkAccessChecks",
]


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise RuntimeError("Chromium is needed for browser tests: apt-get install chromium")
    return path


@contextmanager
def _executable(netns: Namespace | None) -> Iterator[str]:
    """Chromium's path, or a script that starts it inside ``netns``."""
    if netns is None:
        yield chromium_path()
        return
    with tempfile.TemporaryDirectory(prefix="chromium-netns-") as directory:
        script = Path(directory) / "chromium"
        command = shlex.join(netns.command(chromium_path()))
        script.write_text(f'#!/bin/sh\nexec {command} "$@"\n')
        script.chmod(0o700)
        yield str(script)


@asynccontextmanager
async def chromium(netns: Namespace | None = None) -> AsyncIterator[Browser]:
    """Headless Chromium; inside ``netns`` if given (its pages then need
    :func:`http_through_this_machine` to load pages served on loopback)."""
    with _executable(netns) as executable:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(
                executable_path=executable, args=CHROMIUM_ARGS, headless=True
            )
            try:
                yield browser
            finally:
                await browser.close()


async def http_through_this_machine(context: BrowserContext) -> None:
    """Have Playwright, on this machine, make the HTTP requests of a namespaced Chromium's
    ``context``: its pages load the call page and reach the homeserver, which listen on this
    machine's loopback, while WebSockets and media still go over the namespace's link."""

    async def fetch_here(route: Route) -> None:
        await route.fulfill(response=await route.fetch())

    await context.route("**/*", fetch_here)
