"""GET /: the single-page web client (``vidproxy/web/static/index.html``),
GET /favicon.ico, its icon (browsers ask for it on every load), and
GET /tus.min.js, the tus client its uploads use (tus-js-client's browser build,
vendored unchanged: ``static/tus.min.js.LICENSE``).

The page is package data, read once at import: it is immutable, not state.
``no-cache`` makes browsers revalidate on every visit (RFC 9111 §5.2.2.4), and
the ETag makes that revalidation a 304 until a new release changes the page.

Its Content-Security-Policy allows exactly the page's own inline script and
style, by hash (computed here from the page, so an edit cannot leave it stale),
and the vendored script by its hash too (CSP 3 §6.7.2.3: an external script
matches a hash source through its ``integrity`` attribute, which the page must
carry with this very hash), and nothing inline or external besides: markup
that reached the page some other way could not run. It talks to and plays
from this origin only, cannot be framed, and has no base URL or form target to
redirect.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources

from aiohttp import web

PAGE = resources.files("vidproxy.web").joinpath("static/index.html").read_bytes()
FAVICON = resources.files("vidproxy.web").joinpath("static/favicon.ico").read_bytes()
FAVICON_MAX_AGE_SECONDS = 86400  # an icon may be a day stale; the page may not
TUS_SCRIPT = resources.files("vidproxy.web").joinpath("static/tus.min.js").read_bytes()
_ETAG_VALUE = hashlib.sha256(PAGE).hexdigest()[:32]
PAGE_ETAG = f'"{_ETAG_VALUE}"'
TUS_SCRIPT_ETAG = f'"{hashlib.sha256(TUS_SCRIPT).hexdigest()[:32]}"'


def inline_source_hash(page: bytes, tag: str) -> str:
    """The CSP source (CSP 3 §8.4, ``'sha256-BASE64'``) of the page's one ``<tag>``."""
    found = re.findall(rb"<%b>(.*?)</%b>" % (tag.encode(), tag.encode()), page, re.DOTALL)
    if len(found) != 1:
        raise ValueError(f"the page must hold exactly one <{tag}> element, not {len(found)}")
    # Browsers hash the element's text as parsed, and HTML parsing turns CRLF into LF.
    digest = hashlib.sha256(found[0].replace(b"\r\n", b"\n")).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


def external_script_hash(page: bytes, src: str, script: bytes) -> str:
    """The CSP source (``'sha384-BASE64'``, as Subresource Integrity writes it) of
    the script the page loads from ``src``; the page's ``integrity`` must match."""
    digest = f"sha384-{base64.b64encode(hashlib.sha384(script).digest()).decode()}"
    tag = f'<script src="{src}" integrity="{digest}"></script>'.encode()
    if page.count(tag) != 1:
        raise ValueError(f"the page must load {src} once, as {tag.decode()}")
    return f"'{digest}'"


PAGE_CSP = "; ".join(
    [
        "default-src 'none'",
        f"script-src {inline_source_hash(PAGE, 'script')} "
        f"{external_script_hash(PAGE, 'tus.min.js', TUS_SCRIPT)}",
        f"style-src {inline_source_hash(PAGE, 'style')}",
        "connect-src 'self'",  # the API: fetch and the upload XHR
        "media-src 'self'",  # the player
        "img-src 'self'",  # its icon
        "base-uri 'none'",
        "form-action 'none'",  # the token form is handled in script, never submitted
        "frame-ancestors 'none'",
    ]
)
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "ETag": PAGE_ETAG,
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": PAGE_CSP,
    # No window opened from elsewhere keeps a handle on the page.
    "Cross-Origin-Opener-Policy": "same-origin",
    # Signed links stay out of Referer.
    "Referrer-Policy": "no-referrer",
}


async def index(request: web.Request) -> web.Response:
    """The page, or 304 when the browser's copy is current."""
    # RFC 9110 §13.1.2: weak comparison, and "*" matches any current page.
    if any(etag.value in (_ETAG_VALUE, "*") for etag in request.if_none_match or ()):
        return web.Response(status=304, headers=PAGE_HEADERS)
    return web.Response(body=PAGE, content_type="text/html", charset="utf-8", headers=PAGE_HEADERS)


FAVICON_HEADERS = {
    "Cache-Control": f"public, max-age={FAVICON_MAX_AGE_SECONDS}",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'",
}


async def favicon(request: web.Request) -> web.Response:
    return web.Response(body=FAVICON, content_type="image/x-icon", headers=FAVICON_HEADERS)


TUS_SCRIPT_HEADERS = {
    "Cache-Control": "no-cache",  # revalidated (304) with the page it belongs to
    "ETag": TUS_SCRIPT_ETAG,
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'",
}


async def tus_script(request: web.Request) -> web.Response:
    if any(etag.value in (TUS_SCRIPT_ETAG.strip('"'), "*") for etag in request.if_none_match or ()):
        return web.Response(status=304, headers=TUS_SCRIPT_HEADERS)
    return web.Response(
        body=TUS_SCRIPT, content_type="text/javascript", charset="utf-8", headers=TUS_SCRIPT_HEADERS
    )
