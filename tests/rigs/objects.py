"""What a test asks of a running vidproxy about one key, over HTTP, and whether
the backend still holds an unfinished upload."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp.test_utils import TestClient

from rigs.polling import POLL_TIMEOUT, apoll

Client = TestClient[Any, Any]
# What the ``pending_uploads`` fixture hands out: the backend's unfinished uploads.
Pending = Callable[[], Awaitable[list[str]]]
# A read that hangs (a fault test gone wrong) fails instead of holding the suite.
READ_TIMEOUT = aiohttp.ClientTimeout(total=30)


def video_path(key: str) -> str:
    """``/videos/KEY``, the key percent-encoded but for its slashes."""
    return f"/videos/{quote(key, safe='/')}"


async def put(
    client: Client,
    key: str,
    body: bytes,
    *,
    skip_auto_headers: tuple[str, ...] = (),
    **headers: str,
) -> Any:
    """PUT ``body`` under ``key`` with ``headers``; asserts 201, returns the answer's JSON."""
    response = await client.put(
        video_path(key), data=body, headers=headers, skip_auto_headers=skip_auto_headers
    )
    assert response.status == 201, await response.text()
    return await response.json()


async def put_untyped(client: Client, key: str, body: bytes, **headers: str) -> Any:
    """``put`` without aiohttp's default Content-Type, as curl sends a file."""
    return await put(client, key, body, skip_auto_headers=("Content-Type",), **headers)


async def stored(client: Client, key: str, **headers: str) -> bytes | None:
    """The bytes vidproxy serves under ``key`` (asked with ``headers``), None on 404."""
    response = await client.get(video_path(key), headers=headers, timeout=READ_TIMEOUT)
    if response.status == 404:
        return None
    assert response.status == 200, await response.text()
    return bytes(await response.read())


async def nothing_pending(
    pending_uploads: Pending, within: float = POLL_TIMEOUT, what: str = "no unfinished upload left"
) -> None:
    """Wait until the backend holds no unfinished upload (no S3 multipart upload,
    no fs temp file): a failed or abandoned upload is cleaned up after its answer."""

    async def none_left() -> bool:
        return await pending_uploads() == []

    await apoll(none_left, what, within)
