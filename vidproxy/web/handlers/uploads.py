"""tus 1.0.0 at /uploads: thin handlers over ``storage.base.ResumableStore``.

Header parsing lives in ``vidproxy.uploads.headers``, the offset rules in
``vidproxy.uploads.record``; ``Tus-Resumable`` goes on every answer (errors
included) from ``add_tus_headers``, an ``on_response_prepare`` hook, since some
answers (a refused ``Expect``) never pass the middlewares.
"""

from __future__ import annotations

import time
from urllib.parse import quote

from aiohttp import web

from ...errors import (
    Forbidden,
    InvalidUploadHeader,
    MethodNotAllowed,
    NotFound,
    PreconditionFailed,
    TooLarge,
    UnsupportedMediaType,
    VidproxyError,
)
from ...keys import new_key, validate_key
from ...media import validate_content_type
from ...storage.base import StoredObject
from ...uploads.headers import (
    CHECKSUM_ALGORITHMS,
    EXTENSIONS,
    OFFSET_CONTENT_TYPE,
    TUS_VERSION,
    check_version,
    encode_metadata,
    http_date,
    parse_checksum,
    parse_defer_length,
    parse_flag,
    parse_metadata,
    parse_uint,
)
from ...uploads.record import UploadRecord, check_patch, declare_length, room_left
from ..appkeys import AUTH, CONFIG, METRICS, RESUMABLE, STORE, TUS_LOCKS, UPLOADS
from ..body import MinRate, PatchBody
from ..errors import error_response
from ..guards import upload_expect_handler

UPLOADS_PATH = "/uploads"
# Methods X-HTTP-Method-Override may name on POST /uploads/{id}.
_OVERRIDABLE = ("PATCH", "DELETE", "HEAD")


def is_tus_path(path: str) -> bool:
    return path == UPLOADS_PATH or path.startswith(UPLOADS_PATH + "/")


async def add_tus_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``Tus-Resumable`` on every /uploads answer but OPTIONS's (tus 1.0.0, core)."""
    if is_tus_path(request.path) and request.method != "OPTIONS":
        response.headers["Tus-Resumable"] = TUS_VERSION


async def tus_expect_handler(request: web.Request) -> web.StreamResponse | None:
    """``100 Continue`` only for a request that would be accepted."""
    try:
        check_version(request.headers.get("Tus-Resumable"))
        if _method(request) == "PATCH":
            _check_patch_type(request)
    except VidproxyError as exc:
        return error_response(exc)
    return await upload_expect_handler(request)


async def options(request: web.Request) -> web.Response:
    """OPTIONS /uploads: what this server speaks."""
    headers = {
        "Tus-Version": TUS_VERSION,
        "Tus-Extension": ",".join(EXTENSIONS),
        "Tus-Max-Size": str(request.app[CONFIG].server.max_upload_bytes),
        "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
    }
    return web.Response(status=204, headers=headers)


async def create(request: web.Request) -> web.Response:
    """POST /uploads (creation, creation-with-upload, creation-defer-length)."""
    check_version(request.headers.get("Tus-Resumable"))
    if _has_body(request):
        _check_patch_type(request)
    record = await _new_record(request)
    resumable = request.app[RESUMABLE]
    await resumable.create(record)
    request.app[METRICS].tus_event("created")
    headers = {"Location": _location(request, record), **_key_header(record.key)}
    stored = None
    if record.length == 0:
        stored = await resumable.finish_empty(record)
    elif _has_body(request):
        with request.app[TUS_LOCKS].hold(record.id):
            stored = await _append(request, record, None)
    headers.update(_progress_headers(record, stored))
    return web.Response(status=201, headers=headers)


async def _new_record(request: web.Request) -> UploadRecord:
    limit = request.app[CONFIG].server.max_upload_bytes
    length = _declared_length(request)
    if length is not None and length > limit:
        raise TooLarge(f"the upload is larger than the {limit}-byte limit")
    metadata = parse_metadata(request.headers.get("Upload-Metadata"))
    upload_id = new_key()
    key = validate_key(metadata.get("key") or _signed_key(request) or upload_id)
    if _signed_key(request) not in (None, key):
        raise Forbidden("the signed URL grants another key than Upload-Metadata names")
    content_type = metadata.get("filetype") or metadata.get("contentType")
    create_only = "create_only" in metadata and parse_flag(metadata["create_only"])
    if create_only and await _exists(request, key):
        raise PreconditionFailed("a video already exists under that key")
    return UploadRecord(
        id=upload_id,
        key=key,
        length=length,
        metadata=metadata,
        content_type=validate_content_type(content_type) if content_type else None,
        create_only=create_only,
        expires=time.time() + request.app[CONFIG].uploads.expire_after,
        plan_size=length,
    )


def _signed_key(request: web.Request) -> str | None:
    """The key a signed creation URL (POST /sign, method POST) was made for."""
    return request.query.get("key") if "sig" in request.query else None


def _location(request: web.Request, record: UploadRecord) -> str:
    """The upload's URL; made with a signed URL, it carries a signature of its own
    for this upload's HEAD, PATCH and DELETE, valid as long as the creation URL
    was plus ``uploads.expire_after``."""
    location = f"{UPLOADS_PATH}/{record.id}"
    expires = request.query.get("expires", "")
    if "sig" not in request.query or not expires.isdigit():
        return location
    lifetime = int(expires) + int(request.app[CONFIG].uploads.expire_after)
    return f"{location}?{request.app[AUTH].upload_query(record.id, lifetime)}"


def _declared_length(request: web.Request) -> int | None:
    value = request.headers.get("Upload-Length")
    deferred = parse_defer_length(request.headers.get("Upload-Defer-Length"))
    if (value is None) == (not deferred):
        raise InvalidUploadHeader("send Upload-Length or Upload-Defer-Length: 1 (one of them)")
    return None if value is None else parse_uint("Upload-Length", value)


async def _exists(request: web.Request, key: str) -> bool:
    try:
        reader = await request.app[STORE].open(key, None, head=True)
    except NotFound:
        return False
    await reader.aclose()
    return True


def _has_body(request: web.Request) -> bool:
    chunked = request.headers.get("Transfer-Encoding", "").lower().endswith("chunked")
    return chunked or bool(request.content_length)


async def head(request: web.Request) -> web.Response:
    """HEAD /uploads/{id}: where the upload stands."""
    check_version(request.headers.get("Tus-Resumable"))
    record = await _load_live(request)
    headers = {"Upload-Offset": str(record.offset), "Cache-Control": "no-store"}
    if record.length is None:
        headers["Upload-Defer-Length"] = "1"
    else:
        headers["Upload-Length"] = str(record.length)
    if record.metadata:
        headers["Upload-Metadata"] = encode_metadata(record.metadata)
    if not record.completed:
        headers["Upload-Expires"] = http_date(record.expires)
        if record.offset:
            request.app[METRICS].tus_event("resumed")
    headers.update(_key_header(record.key))
    if record.completed and record.sha256:
        headers["X-Content-SHA256"] = record.sha256
    return web.Response(status=200, headers=headers)


async def patch(request: web.Request) -> web.Response:
    """PATCH /uploads/{id}: bytes at Upload-Offset."""
    check_version(request.headers.get("Tus-Resumable"))
    _check_patch_type(request)
    offset = parse_uint("Upload-Offset", request.headers.get("Upload-Offset", ""))
    upload_id = request.match_info["upload_id"]
    with request.app[TUS_LOCKS].hold(upload_id):
        record = await _load_live(request)
        check_patch(record, offset)
        stored = await _append(request, record, request.headers.get("Upload-Length"))
    return web.Response(status=204, headers=_progress_headers(record, stored))


async def _append(
    request: web.Request, record: UploadRecord, length: str | None
) -> StoredObject | None:
    app = request.app
    server = app[CONFIG].server
    if length is not None:
        declare_length(record, parse_uint("Upload-Length", length), server.max_upload_bytes)
    checksum = parse_checksum(request.headers.get("Upload-Checksum"))
    with app[UPLOADS].hold():
        min_rate = MinRate(server.min_upload_rate, server.upload_rate_grace)
        room = room_left(record, server.max_upload_bytes)
        body = PatchBody(request, room, server.body_timeout, min_rate, checksum)
        before = record.offset
        stored: StoredObject | None
        try:
            if record.is_full():
                stored = await app[RESUMABLE].finish_empty(record)
            else:
                stored = await app[RESUMABLE].append(record, body)
        finally:
            app[METRICS].tus_bytes(max(record.offset - before, 0))
    if stored is not None:
        app[METRICS].tus_event("completed")
    body.raise_failure()
    return stored


async def delete(request: web.Request) -> web.Response:
    """DELETE /uploads/{id} (termination): parts, tail and record go."""
    check_version(request.headers.get("Tus-Resumable"))
    with request.app[TUS_LOCKS].hold(request.match_info["upload_id"]):
        record = await _load(request)
        await request.app[RESUMABLE].terminate(record)
    request.app[METRICS].tus_event("terminated")
    return web.Response(status=204)


async def override(request: web.Request) -> web.StreamResponse:
    """POST /uploads/{id} with X-HTTP-Method-Override (for clients and proxies
    that cannot send PATCH or DELETE)."""
    check_version(request.headers.get("Tus-Resumable"))
    method = _method(request)
    handlers = {"PATCH": patch, "DELETE": delete, "HEAD": head}
    if method not in handlers:
        raise MethodNotAllowed(
            "POST here needs X-HTTP-Method-Override: PATCH, DELETE or HEAD",
            "HEAD, PATCH, DELETE, OPTIONS",
        )
    return await handlers[method](request)


def _method(request: web.Request) -> str:
    override_ = request.headers.get("X-HTTP-Method-Override", "").strip().upper()
    if request.method == "POST" and override_ in _OVERRIDABLE:
        return override_
    return request.method


def _check_patch_type(request: web.Request) -> None:
    content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type != OFFSET_CONTENT_TYPE:
        raise UnsupportedMediaType(f"a PATCH body is Content-Type: {OFFSET_CONTENT_TYPE}")


async def _load(request: web.Request) -> UploadRecord:
    upload_id = request.match_info["upload_id"]
    if not _looks_like_id(upload_id):
        raise NotFound("no upload with that id")
    try:
        return await request.app[RESUMABLE].load(upload_id)
    except NotFound:
        raise NotFound("no upload with that id") from None


async def _load_live(request: web.Request) -> UploadRecord:
    record = await _load(request)
    if record.is_expired():
        check_patch(record, record.offset)  # raises UploadGone
    return record


def _looks_like_id(upload_id: str) -> bool:
    # A ULID: 26 Crockford base32 characters. Nothing else names a record.
    return len(upload_id) == 26 and upload_id.isalnum() and upload_id.isascii()


def _key_header(key: str) -> dict[str, str]:
    return {"X-Video-Key": quote(key, safe="/")}


def _progress_headers(record: UploadRecord, stored: StoredObject | None) -> dict[str, str]:
    headers = {"Upload-Offset": str(record.offset)}
    if stored is not None:
        headers.update(_key_header(stored.key))
        headers["X-Content-SHA256"] = stored.sha256
        headers["ETag"] = stored.etag
    elif not record.completed:
        headers["Upload-Expires"] = http_date(record.expires)
    return headers
