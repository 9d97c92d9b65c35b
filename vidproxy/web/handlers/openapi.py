"""GET /openapi.json: the OpenAPI 3.1 description of the HTTP contract.

The document is package data (``vidproxy/web/openapi.json``), kept by hand beside
the routes; ``tests/test_openapi.py`` holds the two together. It is read per
request, in a thread: it is small, rarely asked for, and no copy lives in the
module.
"""

from __future__ import annotations

import asyncio
from importlib import resources

from aiohttp import web

DOCUMENT = "openapi.json"


def _read_document() -> bytes:
    return resources.files("vidproxy.web").joinpath(DOCUMENT).read_bytes()


async def openapi(request: web.Request) -> web.Response:
    """The document, as stored."""
    body = await asyncio.to_thread(_read_document)
    return web.Response(
        body=body,
        content_type="application/json",
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )
