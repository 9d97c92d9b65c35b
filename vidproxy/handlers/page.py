"""GET /: the single-page web client (``vidproxy/static/index.html``).

The page is package data, read once at import: it is immutable, not state.
``no-cache`` makes browsers revalidate on every visit (RFC 9111 §5.2.2.4), and
the ETag makes that revalidation a 304 until a new release changes the page.
"""

from __future__ import annotations

import hashlib
from importlib import resources

from aiohttp import web

PAGE = resources.files("vidproxy").joinpath("static/index.html").read_bytes()
_ETAG_VALUE = hashlib.sha256(PAGE).hexdigest()[:32]
PAGE_ETAG = f'"{_ETAG_VALUE}"'
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "ETag": PAGE_ETAG,
    "X-Content-Type-Options": "nosniff",
    # The page links to nothing outside this origin; signed links stay out of Referer.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self' 'unsafe-inline'; "
        "style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
}


async def index(request: web.Request) -> web.Response:
    """The page, or 304 when the browser's copy is current."""
    # RFC 9110 §13.1.2: weak comparison, and "*" matches any current page.
    if any(etag.value in (_ETAG_VALUE, "*") for etag in request.if_none_match or ()):
        return web.Response(status=304, headers=PAGE_HEADERS)
    return web.Response(body=PAGE, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS)
