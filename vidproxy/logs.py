"""Logging: the root format (text or JSON lines) and the access log.

One access line per request: client, method, path, status, body bytes,
duration and cache result. Query strings are dropped from the logged path
except for harmless keys, so a signed URL's signature never reaches a log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
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
        if record.exc_info or record.exc_text:
            # exc_text first: a filter may have rendered (and redacted) it already.
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
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


# asyncio's text for a failed accept(2) (EMFILE, ENFILE, ENOBUFS, ENOMEM). It retries
# after a second, but in Python 3.11 tries the rest of its accept batch first, each
# attempt reporting again with a traceback: tens of thousands of lines a minute.
ACCEPT_EXHAUSTED = "socket.accept() out of system resource"
THROTTLE_SECONDS = 60.0


class Throttled:
    """A warning logged at most once per ``interval``: the first occurrence at
    once, later ones counted and reported with the next line that goes out."""

    def __init__(
        self,
        logger: logging.Logger,
        message: str,
        interval: float = THROTTLE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._message = message
        self._interval = interval
        self._clock = clock
        self._last_logged: float | None = None
        self._unlogged = 0

    def hit(self, detail: str) -> None:
        self._unlogged += 1
        now = self._clock()
        if self._last_logged is not None and now - self._last_logged < self._interval:
            return
        self._logger.warning(
            "%s (%s; %d since the last such warning)",
            self._message,
            detail,
            self._unlogged,
        )
        self._last_logged, self._unlogged = now, 0


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


# ---- credentials never reach a log --------------------------------------------

# botocore's and aiobotocore's debug records show every S3 request as signed:
# the Authorization header (access key id and signature), the canonical request
# and string to sign, a session token. They stay at INFO whatever the level.
SIGNING_LOGGERS = ("botocore", "aiobotocore")
AWS_CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
REDACTED = "REDACTED"
# Shorter configured secrets are not searched for: they would blank out common
# words, and the shapes below still catch them where credentials travel.
MIN_LITERAL_SECRET_CHARS = 6
# Where a credential shows in request dumps, URLs and headers, whatever its
# value: (a lowercase text it cannot appear without; what stays, to say what
# was there; the credential itself).
_CREDENTIAL_SHAPES = [
    ("credential=", r"Credential=", r"[^\s,'\"&]+"),  # SigV4: key id / date / region / ...
    ("signature", r"Signature[=:]\s*", r"[0-9a-fA-F]{16,}"),  # SigV4, X-Amz-Signature
    ("x-amz-security-token", r"X-Amz-Security-Token['\"]?\s*[:=]\s*b?['\"]?", r"[^\s,'\"&]+"),
    ("bearer", r"\bBearer\s+", r"[^\s,'\"]+"),
    ("basic", r"\bBasic\s+", r"[^\s,'\"]+"),
    ("sig=", r"[?&;]sig=", r"[^&\s'\"]+"),
]


class RedactCredentials(logging.Filter):
    """A backstop on the handler: whatever a library logs, the configured tokens
    and signing key, the AWS credentials from the environment, and anything
    shaped like a credential (above) become REDACTED, in the message, the
    traceback and the structured fields. A pattern runs only where its text
    occurs, so a plain access line costs a lowercase copy and a few substring
    searches."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self._shapes = [
            (trigger, re.compile(f"({keep}){value}", re.IGNORECASE))
            for trigger, keep, value in _CREDENTIAL_SHAPES
        ]
        # Longest first, so a secret that contains another is replaced whole.
        literals = {s for s in secrets if len(s) >= MIN_LITERAL_SECRET_CHARS}
        self._literals = [
            (secret.lower(), re.compile(re.escape(secret), re.IGNORECASE))
            for secret in sorted(literals, key=len, reverse=True)
        ]

    def redact(self, text: str) -> str:
        lowered = text.lower()
        for trigger, shape in self._shapes:
            if trigger in lowered:
                text = shape.sub(rf"\g<1>{REDACTED}", text)
        for secret, literal in self._literals:
            if secret in lowered:
                text = literal.sub(REDACTED, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = _TRACEBACKS.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            record.fields = {
                k: self.redact(v) if isinstance(v, str) else v for k, v in fields.items()
            }
        return True


_TRACEBACKS = logging.Formatter()


def keep_credentials_out(secrets: Iterable[str], env: Mapping[str, str]) -> None:
    """After ``configure_logging``: hold the signing loggers at INFO or above and
    redact credentials on every root handler. ``secrets``: vidproxy's own tokens
    and key; the AWS credentials are taken from ``env``."""
    root = logging.getLogger()
    for name in SIGNING_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.INFO, root.level))
    aws = [env[name] for name in AWS_CREDENTIAL_VARS if env.get(name)]
    redact = RedactCredentials([*secrets, *aws])
    for handler in root.handlers:
        handler.addFilter(redact)
