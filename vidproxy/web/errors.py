"""The one place where errors become answers: ``{"error": code, "message": message}``.

Every path goes through here: handlers and the middlewares (``error_middleware``),
the upload expect handler, aiohttp's own HTTP exceptions (404 and 405 from the
router), what aiohttp's parser refuses before any route runs, and the answers a
connection writes itself (a head that never arrived, a connection over the bound).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from aiohttp import hdrs, web
from aiohttp.http_exceptions import (
    BadHttpMethod,
    BadStatusLine,
    HttpProcessingError,
    InvalidHeader,
    LineTooLong,
)

from ..errors import (
    BadRequest,
    GatewayTimeout,
    HeadersTooLarge,
    HttpError,
    LengthRequired,
    MalformedRequest,
    MethodNotAllowed,
    NotFound,
    TooLarge,
    UriTooLong,
    VidproxyError,
)

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# aiohttp's own answers, by status; their reason phrase becomes the message.
_AIOHTTP_STATUSES: dict[int, Callable[[str], VidproxyError]] = {
    400: BadRequest,
    404: NotFound,
    411: LengthRequired,
    413: TooLarge,
    414: UriTooLong,
    431: HeadersTooLarge,
}
# A fixed text per kind of parser refusal: aiohttp's own quotes the offending bytes.
_PARSER_MESSAGES: tuple[tuple[type[HttpProcessingError], str], ...] = (
    (LineTooLong, "request line or header line too long"),
    (BadHttpMethod, "invalid HTTP method"),  # before BadStatusLine, its base
    (BadStatusLine, "malformed request line"),
    (InvalidHeader, "invalid header"),
)


def error_body(exc: VidproxyError) -> bytes:
    return json.dumps({"error": exc.code, "message": exc.message}).encode()


def error_headers(exc: VidproxyError) -> dict[str, str]:
    return {**exc.headers(), **exc.extra_headers}


# Statuses outside the IANA registry that vidproxy answers, with their phrase.
_EXTRA_REASONS = {460: "Checksum Mismatch"}  # tus checksum extension


def reason_phrase(status: int) -> str:
    return _EXTRA_REASONS.get(status) or HTTPStatus(status).phrase


def error_response(exc: VidproxyError) -> web.Response:
    return web.Response(
        body=error_body(exc),
        status=exc.status,
        reason=reason_phrase(exc.status),
        content_type="application/json",
        headers=error_headers(exc),
    )


def raw_error_answer(exc: VidproxyError) -> bytes:
    """A whole HTTP/1.1 answer as bytes, for a connection with no request that
    aiohttp could answer through; the connection closes after it."""
    body = error_body(exc)
    lines = [
        f"HTTP/1.1 {exc.status} {reason_phrase(exc.status)}",
        "Content-Type: application/json; charset=utf-8",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in error_headers(exc).items()),
    ]
    return "\r\n".join(lines).encode("ascii") + b"\r\n\r\n" + body


def from_http_exception(exc: web.HTTPException) -> VidproxyError:
    """What aiohttp raised itself (the router's 404 and 405, mostly)."""
    if exc.status == 405:
        return MethodNotAllowed(exc.reason, exc.headers.get(hdrs.ALLOW, ""))
    make = _AIOHTTP_STATUSES.get(exc.status)
    return make(exc.reason) if make else HttpError(exc.status, exc.reason)


def from_aiohttp_answer(status: int, exc: BaseException | None) -> VidproxyError:
    """What aiohttp answers by itself with ``status``: a request its parser refused,
    a handler that crashed or timed out past ``error_middleware``."""
    if isinstance(exc, HttpProcessingError):
        kind = next((text for cls, text in _PARSER_MESSAGES if isinstance(exc, cls)), None)
        refused = MalformedRequest(kind or "malformed HTTP request")
        refused.status = status
        return refused
    if status == 500:
        return VidproxyError("internal server error")
    if status == 504:
        return GatewayTimeout("the request timed out")
    return HttpError(status, "the request failed")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except VidproxyError as exc:
        if exc.status >= 500:
            log.warning("%s %s: %s", request.method, request.path, exc.message)
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(from_http_exception(exc))
    except (ConnectionError, TimeoutError):
        # The client went away or stalled; nobody is left to answer.
        raise
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(VidproxyError("internal server error"))
