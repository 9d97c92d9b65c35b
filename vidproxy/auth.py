"""Access control: bearer tokens and signed URLs.

- ``write_tokens`` guard POST/PUT/DELETE; ``read_tokens`` guard GET/HEAD/list.
  An empty list leaves that kind of access open. A write token also reads.
- A signed URL carries ``expires`` (UNIX seconds) and ``sig``, the hex
  HMAC-SHA256 of ``signing_key`` over ``METHOD\\nKEY\\nEXPIRES``; it grants that
  one method (GET also covers HEAD) on that one key until it expires.
- No credentials, or a token this server does not know: 401 ``unauthorized``;
  a known token without the right (a read token writing), or a bad or expired
  signature: 403 ``forbidden``. Every comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from enum import Enum
from urllib.parse import quote, urlencode

from aiohttp import web

from .config import AuthConfig
from .errors import Forbidden, Unauthorized

READ_METHODS = frozenset({"GET", "HEAD"})


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
        return cls(cfg.write_tokens, cfg.read_tokens, cfg.signing_key.encode())

    def check(self, request: web.BaseRequest, access: Access, key: str | None = None) -> None:
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

    def _check_signature(self, request: web.BaseRequest, key: str) -> None:
        expires = request.query.get("expires", "")
        method = "GET" if request.method == "HEAD" else request.method
        if not self.signing_key or not expires.isdigit():
            raise Forbidden("the signed URL is not valid")
        expected = self.signature(method, key, int(expires))
        if not hmac.compare_digest(expected, request.query.get("sig", "")):
            raise Forbidden("the signed URL is not valid")
        if int(expires) < time.time():
            raise Forbidden("the signed URL has expired")

    def signature(self, method: str, key: str, expires: int) -> str:
        method = method.upper()
        if method == "HEAD":
            method = "GET"  # a GET grant covers HEAD, and a HEAD grant is a GET grant
        message = f"{method}\n{key}\n{expires}".encode()
        return hmac.new(self.signing_key, message, hashlib.sha256).hexdigest()

    def signed_path(self, method: str, key: str, ttl: int) -> tuple[str, int]:
        """The path and query of a URL granting ``method`` on ``key`` for ``ttl`` seconds."""
        expires = int(time.time()) + ttl
        query = urlencode({"expires": expires, "sig": self.signature(method, key, expires)})
        return f"/videos/{quote(key, safe='/')}?{query}", expires


def _bearer_token(request: web.BaseRequest) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _any_equal(token: str, allowed: tuple[str, ...]) -> bool:
    # Compare against every token, so timing says nothing about which matched.
    matches = [hmac.compare_digest(token.encode(), a.encode()) for a in allowed]
    return any(matches)


def access_for(method: str) -> Access:
    return Access.READ if method in READ_METHODS else Access.WRITE
