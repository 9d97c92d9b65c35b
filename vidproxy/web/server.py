"""Run the app until SIGTERM/SIGINT, then drain: stop accepting, let in-flight
requests finish for up to ``server.shutdown_timeout``, cancel the rest (their
multipart uploads are aborted and temp files removed by their own cleanup)."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal

from aiohttp import hdrs, web

from ..config import Config
from ..logs import Throttled
from .appkeys import IN_FLIGHT
from .limits import (
    DESCRIPTORS_PER_CONNECTION,
    RESERVED_DESCRIPTORS,
    ConnectionSlots,
    InFlight,
    connection_limit,
)
from .logs import AccessLogger, throttle_accept_errors
from .protocol import ConnectionRules, JsonErrorRunner

log = logging.getLogger(__name__)

# After draining, what is left gets this long to react to cancellation.
CANCEL_GRACE_SECONDS = 5.0


async def serve(app: web.Application, config: Config) -> None:
    in_flight = app[IN_FLIGHT]
    app.on_response_prepare.append(_close_when_draining)
    slots = ConnectionSlots(max_connections(config))
    _throttle_accept_errors(slots)
    # aiohttp's parser-level rejections answer in JSON like everything else.
    runner = JsonErrorRunner(
        app,
        rules=ConnectionRules(config.server.header_timeout, slots),
        handle_signals=False,
        access_log_class=AccessLogger,
        keepalive_timeout=config.server.keepalive_timeout,
        shutdown_timeout=CANCEL_GRACE_SECONDS,
    )
    # Before the setup: its start-up check can hold it for seconds, and a stop
    # signal then must still end the process cleanly, not by the default action.
    stop = _stop_on_signals()
    await runner.setup()
    site = web.TCPSite(runner, config.server.host, config.server.port)
    try:
        try:
            await site.start()
        except OSError as exc:
            raise ListenError(config.server.host, config.server.port, exc) from exc
        log.info(
            "listening on http://%s:%d (at most %d connections)",
            config.server.host,
            config.server.port,
            slots.limit,
        )
        await stop.wait()
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


def max_connections(config: Config) -> int:
    """``server.max_connections``, or what the open-file limit leaves room for."""
    open_files, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    s3_pool = config.s3.max_pool_connections if config.backend == "s3" else 0
    fitting = connection_limit(open_files, s3_pool)
    configured = config.server.max_connections
    if configured > fitting:
        log.warning(
            "server.max_connections = %d needs about %d descriptors; the open-file limit "
            "is %d: past it, new connections wait for a descriptor (raise the limit: "
            "LimitNOFILE=, ulimit -n)",
            configured,
            configured * DESCRIPTORS_PER_CONNECTION + RESERVED_DESCRIPTORS + s3_pool,
            open_files,
        )
    return configured or fitting


def _throttle_accept_errors(slots: ConnectionSlots) -> None:
    # Out of descriptors: one warning a minute instead of asyncio's traceback per
    # attempt, and a stalled or idle connection closed so the retry gets one.
    throttled = Throttled(log, "cannot accept connections: out of descriptors")
    throttle_accept_errors(asyncio.get_running_loop(), throttled, slots.evict_oldest)


async def _close_when_draining(request: web.Request, response: web.StreamResponse) -> None:
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


def _stop_on_signals() -> asyncio.Event:
    """An event that SIGTERM or SIGINT sets."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
