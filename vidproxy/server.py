"""Run the app until SIGTERM/SIGINT, then drain: stop accepting, let in-flight
requests finish for up to ``server.shutdown_timeout``, cancel the rest (their
multipart uploads are aborted and temp files removed by their own cleanup)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from aiohttp import hdrs, web

from .appkeys import IN_FLIGHT
from .config import Config
from .limits import InFlight
from .logs import AccessLogger
from .protocol import JsonErrorRunner

log = logging.getLogger(__name__)

# After draining, what is left gets this long to react to cancellation.
CANCEL_GRACE_SECONDS = 5.0


async def serve(app: web.Application, config: Config) -> None:
    in_flight = app[IN_FLIGHT]
    app.on_response_prepare.append(_close_when_draining)
    # aiohttp's parser-level rejections answer in JSON like everything else.
    runner = JsonErrorRunner(
        app,
        handle_signals=False,
        access_log_class=AccessLogger,
        shutdown_timeout=CANCEL_GRACE_SECONDS,
    )
    await runner.setup()
    site = web.TCPSite(runner, config.server.host, config.server.port)
    try:
        try:
            await site.start()
        except OSError as exc:
            raise ListenError(config.server.host, config.server.port, exc) from exc
        log.info("listening on http://%s:%d", config.server.host, config.server.port)
        await _wait_for_stop_signal()
        in_flight.draining = True
        await site.stop()
        log.info("stopping: draining %d request(s)", in_flight.count)
        if not await _idle_within(in_flight, config.server.shutdown_timeout):
            log.warning("stopping: cancelling %d request(s) still running", in_flight.count)
            # Ourselves and at once: aiohttp's own shutdown would first wait its
            # timeout again for handlers that are stuck on a body that never comes.
            in_flight.cancel_all()
            await _idle_within(in_flight, CANCEL_GRACE_SECONDS)
    finally:
        await runner.cleanup()
    log.info("stopped")


class ListenError(Exception):
    """The address cannot be bound (taken, not this machine's, privileged), as
    opposed to a resource that failed to open before it."""

    def __init__(self, host: str, port: int, cause: OSError) -> None:
        # The errno's own text: asyncio's message repeats the address. A name that
        # does not resolve (gaierror, negative errno) has only its strerror.
        errno = cause.errno or 0
        reason = os.strerror(errno) if errno > 0 else cause.strerror or str(cause)
        super().__init__(f"cannot listen on {host}:{port}: {reason}")
        self.errno = errno


async def _close_when_draining(request: web.BaseRequest, response: web.StreamResponse) -> None:
    # A kept-alive connection (a proxy's upstream pool) may bring one more request
    # while we drain: answer it, with Connection: close, so none follows.
    if request.app[IN_FLIGHT].draining:
        response.force_close()
        # aiohttp has written its Connection header by the time this hook runs.
        response.headers[hdrs.CONNECTION] = "close"


async def _idle_within(in_flight: InFlight, seconds: float) -> bool:
    try:
        async with asyncio.timeout(seconds):
            await in_flight.wait_idle()
    except TimeoutError:
        return False
    return True


async def _wait_for_stop_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
