"""vidproxy's side of aiohttp's connections: JSON for the answers aiohttp writes
itself, a deadline for request heads, and a bound on open connections.

aiohttp's parser refuses some requests before any route or middleware runs
(request-smuggling shapes, a line over the limit, too many headers, garbage), and
``RequestHandler.handle_error`` answers them, as it answers a handler that timed
out or crashed past ``error_middleware``, in plain text. ``JsonErrorRunner`` is an
``AppRunner`` whose connections give those answers vidproxy's JSON (``web.errors``),
keeping aiohttp's status, logging and ``Connection: close``.

aiohttp has no deadline for a request head (its keep-alive timer does not run
while a head is arriving) and no bound on connections, so half-sent heads
(slowloris) held descriptors until the process ran out. Here a head must arrive
whole within ``header_timeout``: the first from the connection's start, a later
one from its first byte (an idle kept-alive connection is left to aiohttp's
``keepalive_timeout``). ``ConnectionSlots`` bounds the connections and, at the
bound, closes the one that has waited longest for a head.

``StoreFileResponse`` is the ``FileResponse`` that ``web.responses`` sends local
files with: it keeps the store's ETag and Last-Modified, and checks the size of
the file aiohttp opened.

This module is the one place that uses aiohttp's private names (no other module
may: tests/test_architecture.py), each checked against aiohttp 3.14.5 and pinned
by tests/test_connections.py::test_aiohttp_internals_* and
tests/test_protocol.py::test_aiohttp_internals_*:
- ``RequestHandler._messages`` (the deque ``data_received`` appends each parsed
  head to, synchronously, and ``start`` pops), and ``web.Server._kwargs`` and
  ``_loop`` (what a server makes its handlers with);
- ``AppRunner._make_server`` (the one seam for the handler class);
- ``FileResponse._make_response`` (runs in aiohttp's thread with the file it
  opened and its ``fstat``), ``_sendfile`` (leaves the file's position after
  the last byte sent), and ``prepare`` assigning ``etag`` and ``last_modified``
  through their public setters, which ours ignore;
- ``StreamReader._exception`` (the error a finished body was poisoned with);
- ``web_app._cached_build_middleware`` (the middleware-chain cache the tests
  empty between apps), and ``TestServer._make_runner`` (the tests' server on
  production's runner).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import hdrs, web, web_app
from aiohttp.abc import AbstractStreamWriter
from aiohttp.streams import StreamReader

from ..config import ServerConfig
from ..errors import RequestTimeout, TooManyConnections
from .errors import error_response, from_aiohttp_answer, raw_error_answer
from .limits import MAX_DESCRIPTORS, ConnectionSlots

if TYPE_CHECKING:
    from aiohttp.test_utils import TestServer


class ConnectionRules:
    """What every connection of one server shares: the head deadline, the bound,
    and the answers written when either closes a connection."""

    def __init__(self, header_timeout: float, slots: ConnectionSlots) -> None:
        self.header_timeout = header_timeout
        self.slots = slots
        self.head_timed_out = raw_error_answer(
            RequestTimeout(f"the request head did not arrive within {header_timeout:g} s")
        )
        self.refused = raw_error_answer(
            TooManyConnections("every connection is busy with a request; retry shortly")
        )


def default_rules() -> ConnectionRules:
    return ConnectionRules(ServerConfig.header_timeout, ConnectionSlots(MAX_DESCRIPTORS))


class JsonErrorHandler(web.RequestHandler):
    __slots__ = ("_body", "_head_started", "_head_timer", "_rules")

    def __init__(self, manager: web.Server, *, rules: ConnectionRules, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._rules = rules
        # The body of the newest parsed request: bytes after its end start a head.
        self._body: StreamReader | None = None
        self._head_started = False  # bytes of a head have come, not all of it
        self._head_timer: asyncio.TimerHandle | None = None

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # aiohttp's answer is built and dropped for what it does on the way: the log
        # line, and the ConnectionError once a response has started going out.
        super().handle_error(request, status, exc, message)
        response = error_response(from_aiohttp_answer(status, exc))
        # The parser lost its place in the stream: nothing after this can be trusted.
        # aiohttp answers as HTTP/1.0, which implies the close; the header says it anyway.
        response.force_close()
        response.headers[hdrs.CONNECTION] = "close"
        return response

    # ---- the head deadline and the connection bound ----

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self._rules.slots.admit(self):
            self._answer_and_close(self._rules.refused)
            return
        self._start_head_deadline()  # the first head counts from the connection's start

    def data_received(self, data: bytes) -> None:
        starts_head = self._body is None or self._body.is_eof()
        parsed = len(self._messages)
        super().data_received(data)
        if len(self._messages) > parsed:
            self._body = self._messages[-1][1]
            self._head_arrived()
        elif data and starts_head and not self._head_started:
            self._head_started = True
            # While a request is being handled, a pipelined head waits its turn:
            # its deadline starts when the connection is free again (log_access).
            if self._rules.slots.is_waiting(self):
                self._start_head_deadline()

    def log_access(
        self, request: web.BaseRequest, response: web.StreamResponse, time: float | None
    ) -> None:
        # Called once per answer, after its last byte went out: the connection now
        # waits for its next head, unless a pipelined one is already parsed.
        super().log_access(request, response, time)
        if not self._messages:
            self._rules.slots.waiting(self)
            if self._head_started:
                self._start_head_deadline()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._rules.slots.closed(self)
        self._stop_head_deadline()
        super().connection_lost(exc)

    def evict(self) -> None:
        """Close at once, descriptor included: the bound needs this place."""
        self._rules.slots.closed(self)
        self._stop_head_deadline()
        if self.transport is not None:
            self.transport.abort()
        self.force_close()

    def _head_arrived(self) -> None:
        self._head_started = False
        self._stop_head_deadline()
        self._rules.slots.busy(self)

    def _start_head_deadline(self) -> None:
        if self._head_timer is None:
            loop = asyncio.get_running_loop()
            self._head_timer = loop.call_later(self._rules.header_timeout, self._head_overdue)

    def _stop_head_deadline(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_overdue(self) -> None:
        self._head_timer = None
        if not self._rules.slots.is_waiting(self):
            return  # busy with a request: log_access restarts it for a pending head
        if self._head_started:
            self._answer_and_close(self._rules.head_timed_out)
        else:
            self.evict()  # never sent a byte: nobody to answer

    def _answer_and_close(self, answer: bytes) -> None:
        # A few hundred bytes fit any socket buffer: close() does not wait on the client.
        self._rules.slots.closed(self)
        self._stop_head_deadline()
        if self.transport is not None:
            self.transport.write(answer)
        self.force_close()


class JsonErrorServer(web.Server):
    def __init__(self, *args: Any, rules: ConnectionRules, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rules = rules

    def __call__(self) -> web.RequestHandler:
        return JsonErrorHandler(self, loop=self._loop, rules=self.rules, **self._kwargs)


class JsonErrorRunner(web.AppRunner):
    def __init__(
        self, app: web.Application, *, rules: ConnectionRules | None = None, **kwargs: Any
    ) -> None:
        super().__init__(app, **kwargs)
        self.rules = rules or default_rules()

    async def _make_server(self) -> web.Server:
        # aiohttp has no setting for the handler class; this hook is the one seam,
        # and startup, signals and sites stay aiohttp's.
        server = await super()._make_server()
        return JsonErrorServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            rules=self.rules,
            **server._kwargs,
        )


# ---- FileResponse, request bodies, the middleware cache ----


class WrongSize(Exception):
    def __init__(self, found: int | None) -> None:
        super().__init__(found)
        self.found = found  # bytes in the file; None: no file


class StoreFileResponse(web.FileResponse):
    """A FileResponse that keeps the ETag and Last-Modified it was given, sends
    the file only if it holds the recorded number of bytes, and counts the body
    bytes the socket took."""

    body_sent = 0

    def __init__(self, path: Path, size: int, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self._recorded_size = size

    async def _sendfile(
        self, request: web.BaseRequest, fobj: Any, offset: int, count: int
    ) -> AbstractStreamWriter:
        try:
            return await super()._sendfile(request, fobj, offset, count)
        finally:
            # loop.sendfile leaves the file's position after the last byte sent,
            # even when it raises (asyncio's documentation: "file.tell() can be
            # used to obtain the actual number of bytes sent"); aiohttp's own
            # fallback reads as it writes, so it lands there too.
            self.body_sent = max(0, min(count, fobj.tell() - offset))

    def _make_response(self, request: web.BaseRequest, accept_encoding: str) -> Any:
        # aiohttp's worker thread, after it opened the file it will send and
        # fstat'ed it: checking here costs nothing and cannot race a change
        # between our look and aiohttp's.
        try:
            result = super()._make_response(request, accept_encoding)
        except FileNotFoundError:
            raise WrongSize(None) from None
        fobj, st = result[1], result[2]
        if st.st_size != self._recorded_size:
            if fobj is not None:
                fobj.close()
            raise WrongSize(st.st_size)
        return result

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        # aiohttp prepares a returned response again; FileResponse's prepare
        # is not idempotent, so the first (ours, above) is the only one.
        if self.prepared:
            return None
        return await super().prepare(request)

    @property
    def etag(self) -> Any:
        return super().etag

    @etag.setter
    def etag(self, value: Any) -> None:
        pass  # FileResponse would put its mtime-size tag here

    @property
    def last_modified(self) -> Any:
        return super().last_modified

    @last_modified.setter
    def last_modified(self, value: Any) -> None:
        pass  # keep the store's Last-Modified, not the file's mtime


def forgive_finished_body(content: StreamReader) -> None:
    """Drop the ``ConnectionResetError`` aiohttp sets on a body whose sender
    closed its side after the last byte, so the buffered rest can be read."""
    content._exception = None


def forget_middleware_chains() -> None:
    """Empty aiohttp's module-level LRU of middleware chains, which keeps every
    Application it has seen (and all they hold) alive: for tests, which start
    hundreds of apps in one process."""
    web_app._cached_build_middleware.cache_clear()


def production_test_server(
    app: web.Application,
    rules: ConnectionRules | None = None,
    *,
    handler_cancellation: bool = False,
    **runner_kwargs: Any,
) -> TestServer:
    """For the tests: an aiohttp TestServer that runs ``app`` as ``server.serve``
    does, on ``JsonErrorRunner`` (with ``rules`` and ``runner_kwargs``), so what
    aiohttp's parser refuses is answered in JSON; and with ``handler_cancellation``
    off unless asked, where TestServer turns it on, so a client that hangs up does
    not cancel the handler (an ffmpeg upload that sent its whole body and closed
    must still be stored)."""
    from aiohttp.test_utils import TestServer  # the tests' only: not loaded to serve

    class ProductionTestServer(TestServer):
        async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
            kwargs.update(runner_kwargs, handler_cancellation=handler_cancellation)
            return JsonErrorRunner(self.app, rules=rules, **kwargs)

    return ProductionTestServer(app)
