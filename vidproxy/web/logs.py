"""What aiohttp's server logs: one access line per request, and its own
reports of parser refusals and accept(2) failures kept to one line.

One access line per request: client, method, path, status, body bytes,
duration and cache result. Query strings are dropped from the logged path
except for harmless keys, so a signed URL's signature never reaches a log.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_plus

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

from ..logs import Throttled
from .responses import body_bytes_sent

# Query parameters safe to log; everything else (sig, tokens) is redacted.
_LOGGED_QUERY_KEYS = frozenset({"prefix", "after", "limit", "expires"})


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs a request its parser refused (smuggling shapes, bad header bytes)
    as an error whose traceback quotes the offending line, bearer token or signed
    query included: keep only the kind of error, one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "-"
            record.msg = "refused a malformed request from %s (%s %s)"
            record.args = (remote, exc.code, type(exc).__name__)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


# asyncio's text for a failed accept(2) (EMFILE, ENFILE, ENOBUFS, ENOMEM). It retries
# after a second, but in Python 3.11 tries the rest of its accept batch first, each
# attempt reporting again with a traceback: tens of thousands of lines a minute.
ACCEPT_EXHAUSTED = "socket.accept() out of system resource"


def throttle_accept_errors(
    loop: asyncio.AbstractEventLoop, throttled: Throttled, on_exhausted: Callable[[], object]
) -> None:
    """Route asyncio's accept-exhaustion reports through ``throttled`` and call
    ``on_exhausted`` for each (to free a descriptor); everything else goes on as before."""
    previous = loop.get_exception_handler()

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("message") == ACCEPT_EXHAUSTED:
            exc = context.get("exception")
            throttled.hit(getattr(exc, "strerror", None) or repr(exc))
            on_exhausted()
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handle)


class AccessLogger(AbstractAccessLogger):
    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        fields = access_fields(request, response, time)
        message = (
            f'{fields["remote"]} "{fields["method"]} {fields["path"]} '
            f'HTTP/{fields["http_version"]}" {fields["status"]} {fields["bytes"]} '
            f"{fields['duration']:.6f} {fields['cache'] or '-'}"
        )
        self.logger.info(message, extra={"fields": fields})


def access_fields(
    request: web.BaseRequest, response: web.StreamResponse, time: float
) -> dict[str, Any]:
    return {
        "remote": request.remote,
        "method": request.method,
        "path": _loggable_path(request),
        "http_version": f"{request.version.major}.{request.version.minor}",
        "status": response.status,
        # What the socket took, not the declared length: a client that read 1,000
        # bytes of 300 MiB and left is not logged as having had 300 MiB.
        "bytes": body_bytes_sent(response),
        "duration": time,
        "cache": response.headers.get("X-Cache"),
    }


def _loggable_path(request: web.BaseRequest) -> str:
    path, _, query = request.raw_path.partition("?")
    if not query:
        return path
    # Values stay percent-encoded as sent: a decoded %0A would start a forged log line.
    parts = []
    for pair in filter(None, query.split("&")):
        name, _, value = pair.partition("=")
        logged = value if unquote_plus(name) in _LOGGED_QUERY_KEYS else "REDACTED"
        parts.append(f"{name}={logged}")
    return path + "?" + "&".join(parts)


# ---- credentials never reach a log --------------------------------------------

# botocore's and aiobotocore's debug records show every S3 request as signed:
# the Authorization header (access key id and signature), the canonical request
# and string to sign, a session token. They stay at INFO whatever the level.
