"""Headless Chromium (Debian's package) driven by Playwright, and a loopback server for the
pages in ``web/`` with their npm dependencies (installed from the lockfile by ``npm ci``) and
the scripts bundled from them (``npm run build``, redone for each test module, so never stale).

Chromium gets fake camera and microphone devices, offers loopback ICE candidates only with
``--allow-loopback-in-peer-connection``, and is kept from contacting anything on its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
import shutil
import subprocess

from aiohttp import web
from playwright.async_api import Browser, async_playwright

from .ports import free_port

WEB_ROOT = Path(__file__).resolve().parents[2] / "web"
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
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise RuntimeError("Chromium is needed for browser tests: apt-get install chromium")
    return path


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


@asynccontextmanager
async def web_pages() -> AsyncIterator[str]:
    """Serve ``web/`` on loopback; yields its base URL."""
    if not (WEB_ROOT / "node_modules").is_dir():
        raise RuntimeError("web/node_modules is missing: run `npm ci` in web/")
    subprocess.run(["npm", "run", "--silent", "build"], cwd=WEB_ROOT, check=True, timeout=120)
    app = web.Application()
    app.router.add_static("/", WEB_ROOT, follow_symlinks=False)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
