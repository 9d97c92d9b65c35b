"""Access control for every request, and the early answer to ``Expect: 100-continue``.

aiohttp sends ``100 Continue`` from the route's expect handler, before any
middleware runs, so the upload routes get ``upload_expect_handler``: it
refuses a request that is unauthorised, too large or over the upload limit
before the client sends a byte of its body. The middleware checks access
again for every request, Expect or not.
"""

from __future__ import annotations

from aiohttp import HttpVersion11, hdrs, web

from ..auth import Access, access_for
from ..errors import ExpectationFailed, TooLarge, Unauthorized, VidproxyError
from ..keys import validate_key
from .appkeys import AUTH, CONFIG, UPLOADS
from .errors import error_response

# Routes anyone may call: probes, metrics, the page, its icon and the API description.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/", "/openapi.json", "/favicon.ico"})
SIGN_PATH = "/sign"
TUS_CREATION_PATH = "/uploads"


def authorize(request: web.Request) -> None:
    if request.path in PUBLIC_PATHS:
        return
    if request.path == SIGN_PATH:
        _check_signer(request)
        return
    access = access_for(request.method)
    upload_id = request.match_info.get("upload_id")
    if upload_id is not None:
        request.app[AUTH].check_upload(request, access, upload_id)
        return
    key = request.match_info.get("key")
    if request.path == TUS_CREATION_PATH and request.method == "POST":
        key = request.query.get("key")  # a signed tus creation URL names its key
    request.app[AUTH].check(request, access, key)


def _check_signer(request: web.Request) -> None:
    """POST /sign needs the access the URL it hands out grants (a read token signs
    GET and HEAD), which its handler checks once it has the body. Before any body
    is parsed: the caller may read, or may write."""
    authorizer = request.app[AUTH]
    try:
        authorizer.check(request, Access.READ)
    except Unauthorized:
        authorizer.check(request, Access.WRITE)


async def upload_expect_handler(request: web.Request) -> web.StreamResponse | None:
    try:
        authorize(request)
        if "key" in request.match_info:
            validate_key(request.match_info["key"])
        _check_declared_length(request)
        request.app[UPLOADS].check_free()
    except VidproxyError as exc:
        return error_response(exc)
    return await _send_continue(request)


async def _send_continue(request: web.Request) -> web.StreamResponse | None:
    expect = request.headers.get(hdrs.EXPECT, "")
    if request.version != HttpVersion11:
        return None
    if expect.lower() != "100-continue":
        return error_response(ExpectationFailed("only Expect: 100-continue is supported"))
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0  # the 100 is not part of the response
    return None


def _check_declared_length(request: web.Request) -> None:
    limit = request.app[CONFIG].server.max_upload_bytes
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge(f"the body is larger than the {limit}-byte limit")
