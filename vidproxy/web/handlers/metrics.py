"""GET /metrics: the Prometheus text format, without authentication."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import generate_latest

from ..appkeys import METRICS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})
