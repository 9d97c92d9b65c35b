"""vidproxy's HTTP API as seen from the client: one aiohttp session, paths for
keys, and the boundary where aiohttp's errors become ``errors.ClientError``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from .errors import ConnectionFailed, NotFoundError, ServerError, UsageError

CONNECT_TIMEOUT = 10.0  # seconds to open a connection
READ_TIMEOUT = 300.0  # seconds without a byte from the server before giving up
# Bytes of an error body worth reading: vidproxy's JSON errors are far shorter.
ERROR_BODY_BYTES = 64 * 1024


COLLECTION = "videos"


def key_path(key: str) -> str:
    return f"/{COLLECTION}/" + quote(key, safe="/")


def parse_base_url(text: str) -> URL:
    """vidproxy's base URL. A path is kept as a prefix (vidproxy behind a
    reverse proxy at ``/vp``: requests go to ``/vp/videos/KEY``), but one with a
    ``videos`` segment names the collection or a key in it, not the base: it is
    refused, since it would silently become part of every key."""
    url = URL(text.rstrip("/"))
    if url.scheme not in ("http", "https") or not url.host:
        raise UsageError(f"--url must be an http:// or https:// URL, got {text!r}")
    if url.query_string or url.fragment:
        raise UsageError(f"--url must not carry a query or fragment, got {text!r}")
    if COLLECTION in url.parts:
        prefix = url.parts[1 : url.parts.index(COLLECTION)]
        base = url.with_path("/".join(("", *prefix)))
        raise UsageError(
            f"--url is vidproxy's base URL, without /{COLLECTION} (the client adds "
            f"/{COLLECTION}/KEY itself): use {str(base).rstrip('/')}"
        )
    return url


class Api:
    def __init__(self, session: aiohttp.ClientSession, base_url: URL, token: str | None) -> None:
        self._session = session
        self._base = base_url
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    @property
    def base(self) -> URL:
        return self._base

    def url(self, path: str) -> URL:
        return URL(str(self._base) + path, encoded=True)

    @asynccontextmanager
    async def request(
        self,
        method: str,
        path: str | URL,
        *,
        ok: Collection[int] = (200,),
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """One request whose status must be in ``ok``; errors while the body is
        read inside the ``async with`` are mapped too. ``path`` goes after the
        base URL; a ``URL`` (an upload's ``Location``, resolved) is taken as is."""
        url = path if isinstance(path, URL) else self.url(path)
        try:
            async with self._session.request(
                method, url, headers={**self._headers, **(headers or {})}, **kwargs
            ) as response:
                if response.status not in ok:
                    raise await _server_error(response)
                yield response
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise ConnectionFailed(f"{method} {url}: {_describe(exc)}") from exc
        except TimeoutError as exc:
            raise ConnectionFailed(f"{method} {url}: timed out") from exc

    async def json(self, method: str, path: str, **kwargs: Any) -> Any:
        async with self.request(method, path, **kwargs) as response:
            return await response.json(content_type=None)


@asynccontextmanager
async def open_api(base_url: str, token: str | None) -> AsyncIterator[Api]:
    timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
        yield Api(session, parse_base_url(base_url), token)


async def _server_error(response: aiohttp.ClientResponse) -> ServerError:
    """vidproxy answers ``{"error": code, "message": text}``; anything else
    (a proxy's HTML page, say) is reported by its status line."""
    code, message = "http_error", response.reason or "error"
    try:
        body = json.loads(await response.content.read(ERROR_BODY_BYTES))
        code, message = str(body["error"]), str(body["message"])
    except (ValueError, KeyError, TypeError, aiohttp.ClientError):
        pass
    kind = NotFoundError if response.status == 404 else ServerError
    return kind(response.status, code, message)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect: {exc.os_error.strerror or exc.os_error}"
    return str(exc) or type(exc).__name__
