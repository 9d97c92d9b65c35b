"""Liveness and readiness probes, and the one readiness check at start."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from ...errors import VidproxyError
from ...storage.base import Store
from ..appkeys import STORE

log = logging.getLogger(__name__)


async def healthz(request: web.Request) -> web.Response:
    """200 while the process runs."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """200 when the storage backend answers; its error (503), which says why, otherwise."""
    store = request.app[STORE]
    await store.check_ready()
    return web.json_response({"status": "ready", "backend": store.name})


# How long the start waits for its check before it listens anyway.
START_CHECK_WAIT = 2.0


def check_once_at_start(
    where: str,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` that asks the backend once at the start and says in one
    line whether it answers and why not. The port opens once the check is done
    (or after START_CHECK_WAIT): run beside the first request, its S3 calls held
    a first GET's first byte up by as much as 50 ms (bench/, first GET after start).
    Never fatal: in a stack that starts together S3 may come up after vidproxy;
    the check goes on behind the start, and /readyz reports it."""

    async def context(app: web.Application) -> AsyncIterator[None]:
        check = asyncio.ensure_future(_check(app[STORE], where))
        await asyncio.wait([check], timeout=START_CHECK_WAIT)
        yield
        check.cancel()
        await asyncio.gather(check, return_exceptions=True)

    return context


async def _check(store: Store, where: str) -> None:
    try:
        await store.check_ready()
    except VidproxyError as exc:
        log.warning(
            "storage not ready (%s): %s; serving anyway, /readyz answers 503 until it is",
            where,
            exc.message,
        )
        return
    log.info("storage ready (%s)", where)
