"""Run the app until SIGTERM/SIGINT, then drain: stop accepting, let in-flight
requests finish for up to ``server.shutdown_timeout``, cancel the rest (their
multipart uploads are aborted and temp files removed by their own cleanup)."""

from __future__ import annotations

import asyncio
import logging
import signal

from aiohttp import web

from .appkeys import IN_FLIGHT
from .config import Config
from .logs import AccessLogger

log = logging.getLogger(__name__)

# After draining, what is left gets this long to react to cancellation.
CANCEL_GRACE_SECONDS = 5.0


async def serve(app: web.Application, config: Config) -> None:
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log_class=AccessLogger,
        shutdown_timeout=CANCEL_GRACE_SECONDS,
    )
    await runner.setup()
    site = web.TCPSite(runner, config.server.host, config.server.port)
    try:
        await site.start()
        log.info("listening on http://%s:%d", config.server.host, config.server.port)
        await _wait_for_stop_signal()
        await site.stop()
        in_flight = app[IN_FLIGHT]
        log.info("stopping: draining %d request(s)", in_flight.count)
        try:
            async with asyncio.timeout(config.server.shutdown_timeout):
                await in_flight.wait_idle()
        except TimeoutError:
            log.warning("stopping: cancelling %d request(s) still running", in_flight.count)
    finally:
        await runner.cleanup()
    log.info("stopped")


async def _wait_for_stop_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
