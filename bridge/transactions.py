"""Appservice transactions from the homeserver: a body of the wrong shape gets a 400 here.

mautrix's handler expects a JSON object of event lists; anything else (a JSON array, say, or
JSON nested thousands deep) raised out of it and answered 500 with a traceback in the log.
This middleware checks the shape first, without changing what mautrix then reads.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Awaitable, Callable
import json
import re

from aiohttp import web

TRANSACTION_PATH = re.compile(r"^(/_matrix/app/v1)?/transactions/[^/]+$")
EVENT_LISTS = (
    "events",
    "ephemeral",
    "de.sorunome.msc2409.ephemeral",
    "to_device",
    "de.sorunome.msc2409.to_device",
)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def check_transaction_shape(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.method == "PUT" and TRANSACTION_PATH.match(request.path):
        problem = shape_problem(await request.read())
        if problem is not None:
            errcode, message = problem
            return web.json_response({"errcode": errcode, "error": message}, status=400)
    return await handler(request)


def shape_problem(body: bytes) -> tuple[str, str] | None:
    """(errcode, message) saying what is wrong with a transaction body, or None."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        return "M_NOT_JSON", "The body is not JSON."
    except RecursionError:
        return "M_BAD_JSON", "The body is nested too deeply."
    if not isinstance(data, dict):
        return "M_BAD_JSON", "The body must be a JSON object."
    for key in EVENT_LISTS:
        value = data.get(key)
        if value is not None and not (
            isinstance(value, list) and all(isinstance(item, dict) for item in value)
        ):
            return "M_BAD_JSON", f"`{key}` must be a list of event objects."
    return None
