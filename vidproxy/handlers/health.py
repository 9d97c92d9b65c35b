"""Liveness and readiness probes."""

from __future__ import annotations

from aiohttp import web

from ..appkeys import STORE


async def healthz(request: web.Request) -> web.Response:
    """200 while the process runs."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """200 when the storage backend answers; its error (503) otherwise."""
    store = request.app[STORE]
    await store.check_ready()
    return web.json_response({"status": "ready", "backend": store.name})
