"""What wraps every handler, outermost first: metrics (they see the final
answer), errors to JSON (``errors.error_middleware``), in-flight counting (so
shutdown can drain), access control."""

from __future__ import annotations

import time

from aiohttp import web

from .appkeys import IN_FLIGHT, METRICS
from .errors import Handler
from .guards import authorize


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    response = await handler(request)
    request.app[METRICS].observe(request, response, time.perf_counter() - started)
    return response


@web.middleware
async def in_flight_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    in_flight = request.app[IN_FLIGHT]
    in_flight.enter()
    try:
        return await handler(request)
    finally:
        in_flight.leave()


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    authorize(request)
    return await handler(request)
