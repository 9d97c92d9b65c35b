"""Access control: bearer tokens and signed URLs.

- ``write_tokens`` guard POST/PUT/DELETE; ``read_tokens`` guard GET/HEAD/list.
  An empty list leaves that kind of access open. A write token also reads.
- A signed URL carries ``expires`` (UNIX seconds) and ``sig``, the hex
  HMAC-SHA256 of ``signing_key`` over ``METHOD\\nKEY\\nEXPIRES``; it grants that
  one operation on that one key until it expires. A method is signed as the
  operation it names: HEAD as GET, and POST (``POST /upload/{key}``, the old
  API's alias of PUT) as PUT.
- No credentials, or a token this server does not know: 401 ``unauthorized``;
  a known token without the right (a read token writing), or a bad, malformed
  or expired signature: 403 ``forbidden``, whatever bytes they hold. Every
  comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Protocol
from urllib.parse import quote, urlencode

from .config import AuthConfig
from .errors import Forbidden, Unauthorized

# OPTIONS: what a tus client asks first (OPTIONS /uploads) needs what a GET needs.
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# What POST /sign and `vidproxy sign` hand out.
# POST: a tus creation URL (POST /uploads?key=...) for that key, signed as a PUT.
SIGNABLE_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "POST"})
# What an upload's own signed Location grants: every tus request on that upload.
UPLOAD_GRANT = "TUS"
MAX_TTL_SECONDS = 7 * 24 * 3600
DEFAULT_TTL_SECONDS = 3600
# The one keyed POST is POST /upload/{key}, which stores like PUT /videos/{key}.
_SIGNED_AS = {"HEAD": "GET", "POST": "PUT"}
# What a signed URL can hold, checked before any arithmetic or comparison: ASCII
# only (str.isdigit takes "²", which int() refuses; compare_digest refuses
# non-ASCII str), and few enough digits for int() (which refuses 4,300 and more).
# Twelve digits of UNIX seconds reach the year 33658.
_EXPIRES_RE = re.compile(r"[0-9]{1,12}")
_SIGNATURE_RE = re.compile(r"[0-9a-f]{64}")  # hex HMAC-SHA256, as hexdigest() writes it


class Credentials(Protocol):
    """What a request shows to prove access (aiohttp's request is one)."""

    @property
    def method(self) -> str: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def query(self) -> Mapping[str, str]: ...


class Access(Enum):
    READ = "read"
    WRITE = "write"


@dataclass(frozen=True)
class Authorizer:
    write_tokens: tuple[str, ...]
    read_tokens: tuple[str, ...]
    signing_key: bytes

    @classmethod
    def from_config(cls, cfg: AuthConfig) -> Authorizer:
        return cls(cfg.write_tokens, cfg.read_tokens, _utf8(cfg.signing_key))

    def check(self, request: Credentials, access: Access, key: str | None = None) -> None:
        """Raise ``Unauthorized`` or ``Forbidden`` unless ``request`` may do ``access``."""
        allowed = self._tokens_for(access)
        if not allowed:
            return
        if key is not None and "sig" in request.query:
            self._check_signature(request, key)
            return
        token = _bearer_token(request)
        if token is None:
            raise Unauthorized("this request needs Authorization: Bearer <token>")
        if not _any_equal(token, allowed):
            if not _any_equal(token, self.write_tokens + self.read_tokens):
                raise Unauthorized("the token is not one this server knows")
            raise Forbidden("a read token cannot write")

    def _tokens_for(self, access: Access) -> tuple[str, ...]:
        if access is Access.WRITE:
            return self.write_tokens
        if not self.read_tokens:
            return ()
        return self.read_tokens + self.write_tokens

    def _check_signature(self, request: Credentials, key: str) -> None:
        expires = request.query.get("expires", "")
        sig = request.query.get("sig", "")
        well_formed = _EXPIRES_RE.fullmatch(expires) and _SIGNATURE_RE.fullmatch(sig)
        if not self.signing_key or not well_formed:
            raise Forbidden("the signed URL is not valid")
        expected = self.signature(request.method, key, int(expires))
        if not hmac.compare_digest(expected.encode(), sig.encode()):
            raise Forbidden("the signed URL is not valid")
        if int(expires) < time.time():
            raise Forbidden("the signed URL has expired")

    def signature(self, method: str, key: str, expires: int) -> str:
        method = method.upper()
        method = _SIGNED_AS.get(method, method)
        # surrogatepass: a key that is not valid UTF-8 gets a signature that
        # matches nothing (and a 400 from the key check), never an exception.
        message = f"{method}\n{key}\n{expires}".encode("utf-8", "surrogatepass")
        return hmac.new(self.signing_key, message, hashlib.sha256).hexdigest()

    def signed_path(self, method: str, key: str, ttl: int) -> tuple[str, int]:
        """The path and query of a URL granting ``method`` on ``key`` for ``ttl`` seconds."""
        expires = int(time.time()) + ttl
        query = urlencode({"expires": expires, "sig": self.signature(method, key, expires)})
        if method.upper() == "POST":  # a tus creation for that key
            return f"/uploads?{urlencode({'key': key})}&{query}", expires
        return f"/videos/{quote(key, safe='/')}?{query}", expires

    def upload_query(self, upload_id: str, expires: int) -> str:
        """The query of a tus upload's signed Location: HEAD, PATCH and DELETE on
        that one upload until ``expires``, for a client that created it with a
        signed URL and has no token."""
        sig = self.signature(UPLOAD_GRANT, _upload_resource(upload_id), expires)
        return urlencode({"expires": expires, "sig": sig})

    def check_upload(self, request: Credentials, access: Access, upload_id: str) -> None:
        """A request on one tus upload: a token, or that upload's signed Location."""
        if not self._tokens_for(access) or "sig" not in request.query:
            self.check(request, access)
            return
        upload = _GrantRequest(request)
        self._check_signature(upload, _upload_resource(upload_id))


def _upload_resource(upload_id: str) -> str:
    return f"uploads/{upload_id}"


@dataclass(frozen=True)
class _GrantRequest:
    """A request seen as the one grant an upload's signed Location carries."""

    request: Credentials

    @property
    def method(self) -> str:
        return UPLOAD_GRANT

    @property
    def headers(self) -> Mapping[str, str]:
        return self.request.headers

    @property
    def query(self) -> Mapping[str, str]:
        return self.request.query


def _bearer_token(request: Credentials) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _any_equal(token: str, allowed: tuple[str, ...]) -> bool:
    sent = _utf8(token)
    # Compare against every token, so timing says nothing about which matched.
    matches = [hmac.compare_digest(sent, _utf8(a)) for a in allowed]
    return any(matches)


def _utf8(text: str) -> bytes:
    # aiohttp decodes header bytes, and Python the environment, as UTF-8 with
    # surrogateescape: encoding the same way gives back the bytes that were
    # sent or set, whatever they were, instead of raising.
    return text.encode("utf-8", "surrogateescape")


def access_for(method: str) -> Access:
    return Access.READ if method in READ_METHODS else Access.WRITE
