"""Answer a GET or HEAD from an ``ObjectReader``, the same way whatever path holds the bytes.

Local files go out through aiohttp's ``FileResponse`` (sendfile). It is handed a
copy of the request that asks for exactly the range ``conditions.plan_response``
chose, and keeps the store's validators instead of its own mtime-size ETag,
so cold (S3) and warm (disk) answers match header for header.

``object_headers`` is the one place that decides how a browser may treat the
stored bytes, for every path (fs, S3, cache hit or miss; 200, 206, HEAD, 304):
no stored byte ever runs script on the service's origin, whatever type its
uploader chose. Media and raster images are shown inline; everything else is a
download. Every answer carries a CSP that forbids script, and ``nosniff``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from email.utils import format_datetime

from aiohttp import hdrs, web
from multidict import CIMultiDict

from ..conditions import ByteRange, Plan, plan_response
from ..errors import VidproxyError
from ..media import attachment_disposition, shown_inline
from ..storage.base import Chunk, ObjectInfo, ObjectReader, close_stream
from ..storage.integrity import size_problem
from .protocol import StoreFileResponse, WrongSize

log = logging.getLogger(__name__)

_CONDITIONAL_HEADERS = (
    hdrs.RANGE,
    hdrs.IF_RANGE,
    hdrs.IF_MATCH,
    hdrs.IF_NONE_MATCH,
    hdrs.IF_MODIFIED_SINCE,
    hdrs.IF_UNMODIFIED_SINCE,
    # Without it FileResponse never looks for NAME.gz / NAME.br siblings.
    hdrs.ACCEPT_ENCODING,
)

# A download, or a document some browser renders anyway: no script, no fetches,
# an opaque origin (so no access to the page's storage or cookies).
DOWNLOAD_CSP = "sandbox; default-src 'none'"
# Media and images opened directly: the browser's own player or image view, still
# without script. Chromium's player fetches the URL again from inside the document,
# so the document keeps its origin (allow-same-origin without allow-scripts) and
# may load media and images from it; under a plain sandbox it cannot play.
INLINE_CSP = "sandbox allow-same-origin; default-src 'none'; media-src 'self'; img-src 'self'"
# Headers a 304 repeats (RFC 9110 §15.4.5): the validators, and the ones that say
# how to treat the bytes, so a browser's copy cached before they existed gets them.
_NOT_MODIFIED_HEADERS = (
    hdrs.CACHE_CONTROL,
    hdrs.ETAG,
    hdrs.LAST_MODIFIED,
    "X-Cache",
    hdrs.CONTENT_DISPOSITION,
    "Content-Security-Policy",
    "X-Content-Type-Options",
)


def object_headers(
    info: ObjectInfo, cache_status: str | None, cache_control: str = ""
) -> dict[str, str]:
    headers = {
        # The stored type goes out unchanged: players need it, and the
        # disposition and CSP below are what keep it harmless.
        hdrs.CONTENT_TYPE: info.content_type,
        hdrs.ETAG: info.etag,
        hdrs.LAST_MODIFIED: _http_date(info),
        hdrs.ACCEPT_RANGES: "bytes",
        "X-Content-Type-Options": "nosniff",
        **presentation_headers(info),
    }
    if info.sha256:
        headers["X-Content-SHA256"] = info.sha256
    if cache_status:
        headers["X-Cache"] = cache_status
    if cache_control:  # server.cache_control: the operator's, for browsers and CDNs
        headers[hdrs.CACHE_CONTROL] = cache_control
    return headers


def presentation_headers(info: ObjectInfo) -> dict[str, str]:
    """How a browser may treat the bytes: inline media, or a sandboxed download."""
    if shown_inline(info.content_type):
        return {"Content-Security-Policy": INLINE_CSP}
    return {
        hdrs.CONTENT_DISPOSITION: attachment_disposition(info.key),
        "Content-Security-Policy": DOWNLOAD_CSP,
    }


async def send_object(
    request: web.Request, reader: ObjectReader, cache_control: str = ""
) -> web.StreamResponse:
    info = reader.info
    headers = object_headers(info, reader.cache_status, cache_control)
    try:
        plan = plan_response(request.method, request.headers, info.validators)
    except VidproxyError as exc:  # 412, 416: still say where the answer came from
        if reader.cache_status:
            exc.extra_headers["X-Cache"] = reader.cache_status
        raise
    if plan.status == 304:
        return web.Response(status=304, headers=_not_modified_headers(headers))
    if plan.range is not None:
        headers[hdrs.CONTENT_RANGE] = plan.range.content_range(info.size)
    if reader.local_path is not None:
        sendfile = StoreFileResponse(
            reader.local_path, info.size, status=plan.status, headers=headers
        )
        return await _prepare_file(request, reader, sendfile, plan)
    length = plan.range.length if plan.range is not None else info.size
    if request.method == "HEAD" or length == 0:
        response = _StreamedObject(status=plan.status, headers=headers)
        response.content_length = length
        await response.prepare(request)
        return response
    chunks = await reader.stream(plan.range)
    return await _stream(request, plan, headers, length, chunks)


def body_bytes_sent(response: web.StreamResponse) -> int:
    """Body bytes of ``response`` the socket took, for the access log and metrics:
    an object answer counts what went out before its client left, not its length."""
    if isinstance(response, _StreamedObject | StoreFileResponse):
        return response.body_sent
    return response.content_length or 0  # small answers, written whole in one go


class _StreamedObject(web.StreamResponse):
    """An object answer written chunk by chunk, counting what the socket took."""

    body_sent = 0


def _not_modified_headers(headers: dict[str, str]) -> dict[str, str]:
    # Not the representation's type or length: the client keeps its copy's.
    return {k: v for k, v in headers.items() if k in _NOT_MODIFIED_HEADERS}


async def _stream(
    request: web.Request,
    plan: Plan,
    headers: dict[str, str],
    length: int,
    chunks: AsyncIterator[Chunk],
) -> web.StreamResponse:
    response = _StreamedObject(status=plan.status, headers=headers)
    response.content_length = length
    await response.prepare(request)
    handed = 0  # body bytes given to the transport
    try:
        async for chunk in chunks:
            await response.write(chunk)
            handed += len(chunk)
            # What the transport still holds never reached the socket; when the
            # client leaves, it is dropped (and the write that sees it raises).
            _count_sent(request, response, handed)
    except ConnectionError:
        return response  # the client left; nothing to tell it
    except Exception as exc:  # headers are out: all we can do is cut the connection
        log.warning("download of %s cut short: %s", request.path, exc)
        if request.transport is not None:
            request.transport.abort()
        return response
    finally:
        await close_stream(chunks)
    await response.write_eof()
    response.body_sent = handed
    return response


def _count_sent(request: web.Request, response: _StreamedObject, handed: int) -> None:
    transport = request.transport
    # A transport that failed has dropped its buffer: its size says nothing then,
    # and the count stays at what was known to be sent before.
    if transport is not None and not transport.is_closing():
        response.body_sent = handed - transport.get_write_buffer_size()


async def _prepare_file(
    request: web.Request, reader: ObjectReader, response: StoreFileResponse, plan: Plan
) -> web.StreamResponse:
    # FileResponse applies Range and conditionals itself; hand it a request whose
    # only remaining question is the range we already decided on.
    request_headers = CIMultiDict(request.headers)
    for name in _CONDITIONAL_HEADERS:
        request_headers.popall(name, None)
    if plan.range is not None:
        request_headers[hdrs.RANGE] = _range_header(plan.range)
    # Prepared here, while the reader still holds the file, not after we return.
    # Players drop ranged requests all the time while seeking.
    with contextlib.suppress(ConnectionError):
        try:
            await response.prepare(request.clone(headers=request_headers))
        except WrongSize as exc:  # nothing is sent yet: answer with an error instead
            raise reader.damaged(size_problem(exc.found, reader.info.size)) from None
    return response


def _range_header(byte_range: ByteRange) -> str:
    return f"bytes={byte_range.start}-{byte_range.stop - 1}"


def _http_date(info: ObjectInfo) -> str:
    return format_datetime(info.last_modified, usegmt=True)
