"""The call page: ``web/`` served on loopback with its npm dependencies (installed from the
lockfile by ``npm ci``) and the scripts bundled from them (``npm run build``, redone each time,
so never stale)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
import subprocess

from aiohttp import web

from .loopback_http import serve

WEB_ROOT = Path(__file__).resolve().parents[1] / "web"


@asynccontextmanager
async def web_pages() -> AsyncIterator[str]:
    """Serve ``web/`` on loopback; yields its base URL."""
    if not (WEB_ROOT / "node_modules").is_dir():
        raise RuntimeError("web/node_modules is missing: run `npm ci` in web/")
    subprocess.run(["npm", "run", "--silent", "build"], cwd=WEB_ROOT, check=True, timeout=120)
    app = web.Application()
    app.router.add_static("/", WEB_ROOT, follow_symlinks=False)
    async with serve(app) as url:
        yield url
