"""POST /sign: hand out a signed URL, for players and uploaders that cannot send headers."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ...auth import DEFAULT_TTL_SECONDS, MAX_TTL_SECONDS, SIGNABLE_METHODS, access_for
from ...errors import InvalidJson, InvalidKey, InvalidMethod, InvalidTtl, SigningDisabled
from ...keys import validate_key
from ..appkeys import AUTH


async def sign(request: web.Request) -> web.Response:
    """Body ``{"key", "method" (GET), "ttl" (3600)}``; answers ``{"url", "expires"}``."""
    key, method, ttl = _parse(await _json_body(request))
    authorizer = request.app[AUTH]
    # The middleware checked read access: a URL grants what its caller may do
    # itself, so a read token signs GET and HEAD, and PUT and DELETE need a write token.
    authorizer.check(request, access_for(method))
    if not authorizer.signing_key:
        raise SigningDisabled("auth.signing_key is not set")
    path, expires = authorizer.signed_path(method, key, ttl)
    return web.json_response({"url": path, "expires": expires, "method": method})


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        raise InvalidJson("the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise InvalidJson("the body must be a JSON object")
    return data


def _parse(data: dict[str, Any]) -> tuple[str, str, int]:
    key = data.get("key")
    if not isinstance(key, str):
        raise InvalidKey("key must be a string")
    method = str(data.get("method", "GET")).upper()
    if method not in SIGNABLE_METHODS:
        raise InvalidMethod(f"method must be one of {sorted(SIGNABLE_METHODS)}")
    ttl = data.get("ttl", DEFAULT_TTL_SECONDS)
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= MAX_TTL_SECONDS:
        raise InvalidTtl(f"ttl must be 1 to {MAX_TTL_SECONDS} seconds")
    return validate_key(key), method, ttl
