"""Thin handlers for /videos: parse the request, call the store, shape the answer."""

from __future__ import annotations

import re
from urllib.parse import quote

from aiohttp import web

from ...conditions import parse_range
from ...errors import InvalidPrecondition, InvalidQuery
from ...keys import new_key, validate_key
from ...media import SNIFF_BYTES, choose_content_type, guess_from_key
from ..appkeys import CONFIG, STORE, UPLOADS
from ..body import MinRate, RequestBody
from ..responses import send_object

DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 1000
_LIMIT_RE = re.compile(rf"[0-9]{{1,{len(str(MAX_LIST_LIMIT))}}}")


def _key(request: web.Request) -> str:
    return validate_key(request.match_info["key"])


async def create_video(request: web.Request) -> web.Response:
    """POST /videos: store the body under a new ULID key."""
    return await _store_body(request, new_key())


async def put_video(request: web.Request) -> web.Response:
    """PUT /videos/{key}: store the body under ``key``, replacing any old object."""
    return await _store_body(request, _key(request))


async def _store_body(request: web.Request, key: str) -> web.Response:
    server = request.app[CONFIG].server
    with request.app[UPLOADS].hold():
        min_rate = MinRate(server.min_upload_rate, server.upload_rate_grace)
        body = RequestBody(request, server.max_upload_bytes, server.body_timeout, min_rate)
        content_type = await _content_type(request, key, body)
        stored = await request.app[STORE].put(
            key, body, content_type, create_only=_create_only(request)
        )
    location = "/videos/" + quote(key, safe="/")
    return web.json_response(stored.to_json(), status=201, headers={"Location": location})


async def _content_type(request: web.Request, key: str, body: RequestBody) -> str:
    header = request.headers.get("Content-Type")
    if header or guess_from_key(key):
        return choose_content_type(header, key, b"")
    return choose_content_type(None, key, await body.peek(SNIFF_BYTES))


def _create_only(request: web.Request) -> bool:
    """``If-None-Match: *`` makes a PUT create-only (412 if the key exists)."""
    value = request.headers.get("If-None-Match")
    if value is None:
        return False
    if value.strip() != "*":
        raise InvalidPrecondition("a write accepts only If-None-Match: *")
    return True


async def get_video(request: web.Request) -> web.StreamResponse:
    """GET or HEAD /videos/{key}: the bytes, honouring Range and conditionals."""
    key = _key(request)
    hint = parse_range(request.headers.get("Range"))
    reader = await request.app[STORE].open(key, hint, head=request.method == "HEAD")
    try:
        return await send_object(request, reader, request.app[CONFIG].server.cache_control)
    finally:
        await reader.aclose()


async def delete_video(request: web.Request) -> web.Response:
    """DELETE /videos/{key}: 204 whether or not it existed."""
    await request.app[STORE].delete(_key(request))
    return web.Response(status=204)


async def list_videos(request: web.Request) -> web.Response:
    """GET /videos?prefix=&after=&limit=: one page, sorted by key."""
    query = request.query
    limit = _parse_limit(query.get("limit"))
    page = await request.app[STORE].list(query.get("prefix", ""), query.get("after", ""), limit)
    return web.json_response(
        {"items": [item.to_json() for item in page.items], "next_after": page.next_after}
    )


def _parse_limit(value: str | None) -> int:
    if value is None:
        return DEFAULT_LIST_LIMIT
    # A bounded run of ASCII digits before int(): it refuses 4,300 digits and more.
    if not _LIMIT_RE.fullmatch(value) or not 1 <= int(value) <= MAX_LIST_LIMIT:
        raise InvalidQuery(f"limit must be 1 to {MAX_LIST_LIMIT}")
    return int(value)
