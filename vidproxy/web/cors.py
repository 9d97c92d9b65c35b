"""Cross-origin reads and writes (the Fetch standard's CORS protocol), for pages
on the origins in ``server.cors_origins``: a player on another site fetching
ranges, an uploader sending a token.

A preflight (``OPTIONS`` with ``Access-Control-Request-Method``) is answered
here, before access control: browsers send it without credentials. Every other
answer gets its CORS headers as it is prepared (``on_response_prepare``), so
streamed objects, files sent with sendfile and JSON errors all carry them: a
page can read a 401's message as well as a 206's ``Content-Range``.
"""

from __future__ import annotations

from aiohttp import hdrs, web

from ..errors import OriginNotAllowed
from .appkeys import CONFIG
from .errors import Handler

ANY_ORIGIN = "*"
# Request headers a page may send: the token, ranges and conditionals, what uploads take.
ALLOWED_HEADERS = (
    "Authorization",
    "Content-Type",
    "Range",
    "If-Match",
    "If-None-Match",
    "If-Modified-Since",
    "If-Unmodified-Since",
    "If-Range",
    "X-Content-SHA256",
    # tus (/uploads)
    "Tus-Resumable",
    "Upload-Length",
    "Upload-Defer-Length",
    "Upload-Offset",
    "Upload-Metadata",
    "Upload-Checksum",
    "X-HTTP-Method-Override",
)
# Response headers a page may read besides the CORS-safelisted ones (Content-Type,
# Content-Length, Last-Modified...): what players and resuming downloaders need.
EXPOSED_HEADERS = (
    "Content-Range",
    "Accept-Ranges",
    "Content-Length",
    "Content-Disposition",
    "ETag",
    "X-Content-SHA256",
    "X-Cache",
    "Location",
    "Retry-After",
    # tus (/uploads)
    "Tus-Resumable",
    "Tus-Version",
    "Tus-Extension",
    "Tus-Max-Size",
    "Tus-Checksum-Algorithm",
    "Upload-Offset",
    "Upload-Length",
    "Upload-Defer-Length",
    "Upload-Metadata",
    "Upload-Expires",
    "X-Video-Key",
)
# How long a browser may reuse a preflight's answer (Chromium caps it at 2 h).
PREFLIGHT_MAX_AGE_SECONDS = 3600


def allowed_origin(configured: tuple[str, ...], origin: str | None) -> str | None:
    """The ``Access-Control-Allow-Origin`` value for a request from ``origin``, or None."""
    if not configured or origin is None:
        return None
    if ANY_ORIGIN in configured:
        return ANY_ORIGIN
    # Browsers send scheme and host in lower case; operators may not write them so.
    if origin.lower() in (o.lower() for o in configured):
        return origin
    return None


def is_preflight(request: web.BaseRequest) -> bool:
    return (
        request.method == hdrs.METH_OPTIONS
        and hdrs.ORIGIN in request.headers
        and hdrs.ACCESS_CONTROL_REQUEST_METHOD in request.headers
    )


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not is_preflight(request):
        return await handler(request)
    return preflight_answer(request)


def preflight_answer(request: web.Request) -> web.Response:
    """204 with what the route allows, or 403 when the origin is not configured."""
    not_allowed = request.match_info.http_exception
    resource = request.match_info.route.resource
    if isinstance(not_allowed, web.HTTPMethodNotAllowed):
        allowed = set(not_allowed.allowed_methods)
    elif not_allowed is None and resource is not None:
        allowed = {route.method for route in resource}  # a route that takes OPTIONS (tus)
    else:
        raise not_allowed or web.HTTPNotFound()  # no route at this path
    configured = request.app[CONFIG].server.cors_origins
    origin = request.headers[hdrs.ORIGIN]
    allow = allowed_origin(configured, origin)
    if allow is None:
        setting = "is empty" if not configured else "does not list it"
        raise OriginNotAllowed(f"cross-origin requests from {origin} are not allowed "
                               f"(server.cors_origins {setting})")  # fmt: skip
    methods = sorted(allowed | {hdrs.METH_OPTIONS})
    headers = {
        hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: allow,
        hdrs.ACCESS_CONTROL_ALLOW_METHODS: ", ".join(methods),
        hdrs.ACCESS_CONTROL_ALLOW_HEADERS: ", ".join(ALLOWED_HEADERS),
        hdrs.ACCESS_CONTROL_MAX_AGE: str(PREFLIGHT_MAX_AGE_SECONDS),
    }
    return web.Response(status=204, headers=headers)


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the CORS headers of an actual (not preflight) answer."""
    configured = request.app[CONFIG].server.cors_origins
    if not configured:
        return
    if ANY_ORIGIN not in configured:
        # The answer differs by Origin: a shared cache must not hand one origin's
        # answer (or one without CORS headers) to another (Fetch §3.2.5).
        _add_vary(response, hdrs.ORIGIN)
        if is_preflight(request):
            _add_vary(response, "Access-Control-Request-Method, Access-Control-Request-Headers")
    allow = allowed_origin(configured, request.headers.get(hdrs.ORIGIN))
    if allow is None or hdrs.ACCESS_CONTROL_ALLOW_ORIGIN in response.headers:
        return
    response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = allow
    response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = ", ".join(EXPOSED_HEADERS)


def _add_vary(response: web.StreamResponse, names: str) -> None:
    present = response.headers.get(hdrs.VARY)
    response.headers[hdrs.VARY] = f"{present}, {names}" if present else names
