"""Logging: the root format (text or JSON lines), throttled warnings, and the
filter that keeps credentials out of every record. What aiohttp's server
logs (the access line, parser refusals) is ``vidproxy.web.logs``."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .config import ServerConfig

_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        # exc_text first: a filter may have rendered (and redacted) it already.
        if record.exc_text:
            entry["exception"] = record.exc_text
        elif record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(server: ServerConfig, filters: Iterable[logging.Filter] = ()) -> None:
    handler = logging.StreamHandler()
    formatter = JsonFormatter() if server.log_format == "json" else logging.Formatter(_TEXT_FORMAT)
    handler.setFormatter(formatter)
    for record_filter in filters:
        handler.addFilter(record_filter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(server.log_level.upper())


# A repeated warning (accept(2) out of descriptors, say) at most this often.
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
