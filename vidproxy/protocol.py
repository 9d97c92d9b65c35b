"""vidproxy's JSON for the answers aiohttp writes itself.

aiohttp's parser refuses some requests before any route or middleware runs
(request-smuggling shapes, a line over the limit, too many headers, garbage), and
``RequestHandler.handle_error`` answers them, as it answers a handler that timed
out or crashed past ``error_middleware``, in plain text. ``JsonErrorRunner`` is an
``AppRunner`` whose connections give those answers ``error_response``'s JSON body,
keeping aiohttp's status, logging and ``Connection: close``.
"""

from __future__ import annotations

from aiohttp import hdrs, web
from aiohttp.http_exceptions import (
    BadHttpMethod,
    BadStatusLine,
    HttpProcessingError,
    InvalidHeader,
    LineTooLong,
)

from .errors import VidproxyError, error_response

MALFORMED = "malformed_request"
# A fixed text per kind: aiohttp's own message quotes the offending bytes.
_PARSER_MESSAGES: tuple[tuple[type[HttpProcessingError], str], ...] = (
    (LineTooLong, "request line or header line too long"),
    (BadHttpMethod, "invalid HTTP method"),  # before BadStatusLine, its base
    (BadStatusLine, "malformed request line"),
    (InvalidHeader, "invalid header"),
)
_HANDLER_ERRORS = {
    500: (VidproxyError.code, "internal server error"),
    504: ("gateway_timeout", "the request timed out"),
}


def describe(status: int, exc: BaseException | None) -> tuple[str, str]:
    """The ``error`` code and message for what aiohttp answers with ``status``."""
    if isinstance(exc, HttpProcessingError):
        kind = next((text for cls, text in _PARSER_MESSAGES if isinstance(exc, cls)), None)
        return MALFORMED, kind or "malformed HTTP request"
    return _HANDLER_ERRORS.get(status, ("http_error", "the request failed"))


class JsonErrorHandler(web.RequestHandler):
    __slots__ = ()

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
        code, text = describe(status, exc)
        response = error_response(status, code, text)
        # The parser lost its place in the stream: nothing after this can be trusted.
        # aiohttp answers as HTTP/1.0, which implies the close; the header says it anyway.
        response.force_close()
        response.headers[hdrs.CONNECTION] = "close"
        return response


class JsonErrorServer(web.Server):
    def __call__(self) -> web.RequestHandler:
        return JsonErrorHandler(self, loop=self._loop, **self._kwargs)


class JsonErrorRunner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        # aiohttp has no setting for the handler class; this hook is the one seam,
        # and startup, signals and sites stay aiohttp's.
        server = await super()._make_server()
        return JsonErrorServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            **server._kwargs,
        )
