"""Logging: the root format (text or JSON lines) and the access log.

One access line per request: client, method, path, status, body bytes,
duration and cache result. Query strings are dropped from the logged path
except for harmless keys, so a signed URL's signature never reaches a log.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import unquote_plus

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

from .config import ServerConfig

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Query parameters safe to log; everything else (sig, tokens) is redacted.
_LOGGED_QUERY_KEYS = frozenset({"prefix", "after", "limit", "expires"})


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(server: ServerConfig) -> None:
    handler = logging.StreamHandler()
    formatter = JsonFormatter() if server.log_format == "json" else logging.Formatter(_TEXT_FORMAT)
    handler.setFormatter(formatter)
    handler.addFilter(MalformedRequestFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(server.log_level.upper())


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
        # sendfile bypasses the writer's byte count; the declared length is exact.
        "bytes": response.content_length or 0,
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
