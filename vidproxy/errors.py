"""vidproxy's error tree and the one place that turns errors into JSON.

    VidproxyError                  status, code, message
    ├── BadRequest                 400 (invalid_key, invalid_content_type, ...)
    │   ├── InvalidKey             400 invalid_key
    │   ├── ChecksumMismatch       400 checksum_mismatch
    │   └── IncompleteBody         400 incomplete_body
    ├── Unauthorized               401 unauthorized: credentials needed
    ├── Forbidden                  403 forbidden: wrong token, bad or expired signature
    ├── NotFound                   404 not_found
    ├── RequestTimeout             408 request_timeout: the body stalled
    ├── LengthRequired             411 length_required
    ├── PreconditionFailed         412 precondition_failed
    ├── TooLarge                   413 too_large
    ├── RangeNotSatisfiable        416 range_not_satisfiable (carries the size)
    ├── ObjectDamaged              500 object_damaged: stored bytes disagree with their record
    ├── UpstreamError              502 upstream_error: the store answered with an error
    └── UpstreamUnavailable        503 upstream_unavailable: the store cannot be reached

Storage backends raise these (never botocore's errors); handlers let them
propagate; ``error_middleware`` renders every one as
``{"error": code, "message": message}``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5


class VidproxyError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        # Headers a caller adds on the way out, e.g. X-Cache on a 416.
        self.extra_headers: dict[str, str] = {}

    def headers(self) -> dict[str, str]:
        return {}


class BadRequest(VidproxyError):
    status = 400
    code = "bad_request"


class InvalidKey(BadRequest):
    code = "invalid_key"


class ChecksumMismatch(BadRequest):
    code = "checksum_mismatch"


class IncompleteBody(BadRequest):
    code = "incomplete_body"


class Unauthorized(VidproxyError):
    status = 401
    code = "unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="vidproxy"'}


class Forbidden(VidproxyError):
    status = 403
    code = "forbidden"


class RequestTimeout(VidproxyError):
    status = 408
    code = "request_timeout"


class NotFound(VidproxyError):
    status = 404
    code = "not_found"


class LengthRequired(VidproxyError):
    status = 411
    code = "length_required"


class PreconditionFailed(VidproxyError):
    status = 412
    code = "precondition_failed"


class TooLarge(VidproxyError):
    status = 413
    code = "too_large"


class RangeNotSatisfiable(VidproxyError):
    status = 416
    code = "range_not_satisfiable"

    def __init__(self, size: int) -> None:
        super().__init__(f"the range is outside the object's {size} bytes")
        self.size = size

    def headers(self) -> dict[str, str]:
        # RFC 9110 §15.5.17: a 416 names the current length.
        return {"Content-Range": f"bytes */{self.size}"}


class ObjectDamaged(VidproxyError):
    status = 500
    code = "object_damaged"


class UpstreamError(VidproxyError):
    status = 502
    code = "upstream_error"


class UpstreamUnavailable(VidproxyError):
    status = 503
    code = "upstream_unavailable"

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(RETRY_AFTER_SECONDS)}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status, headers=headers)


_HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    411: "length_required",
    413: "too_large",
    414: "uri_too_long",
    431: "headers_too_large",
}
# aiohttp answers these itself; only their body changes to JSON.
_PASSTHROUGH_HEADERS = ("Allow",)


def _from_http_exception(exc: web.HTTPException) -> web.Response:
    code = _HTTP_CODES.get(exc.status, "http_error")
    headers = {h: exc.headers[h] for h in _PASSTHROUGH_HEADERS if h in exc.headers}
    return error_response(exc.status, code, exc.reason, headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except VidproxyError as exc:
        if exc.status >= 500:
            log.warning("%s %s: %s", request.method, request.path, exc.message)
        headers = {**exc.headers(), **exc.extra_headers}
        return error_response(exc.status, exc.code, exc.message, headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _from_http_exception(exc)
    except (ConnectionError, TimeoutError):
        # The client went away or stalled; nobody is left to answer.
        raise
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return error_response(500, "internal_error", "internal server error")
