"""vidproxy with its disk cache, talking to moto through the counting proxy.

``cache_rig`` starts nothing by itself: a test uploads objects straight to moto
(``upload``, not counted), starts vidproxy with the cache settings it needs
(``start``), talks HTTP to it, and reads the proxy's counts.

A test module gets the fixtures by importing them::

    from cache_rig import cache_rig_fixture  # noqa: F401
    from s3_proxy import s3_proxy_fixture  # noqa: F401
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from conftest import POLL_INTERVAL, POLL_TIMEOUT
from multidict import CIMultiDictProxy
from s3_proxy import S3Proxy

from vidproxy.config import Config

CONTENT_TYPE = "video/mp4"
# Bound on one request: a body cut short of its Content-Length would otherwise
# keep the client waiting for the rest forever.
FETCH_TIMEOUT = 15.0
# A test that fails with a held S3 response ends in seconds, not after botocore's 60.
S3_READ_TIMEOUT = 10.0


def random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


@dataclass
class Fetched:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def x_cache(self) -> str | None:
        return self.headers.get("X-Cache")


async def fetch(
    client: TestClient[Any, Any], key: str, method: str = "GET", **headers: str
) -> Fetched:
    """One request for ``/videos/{key}``, body read in full."""
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
    async with client.request(
        method, f"/videos/{key}", headers=headers, timeout=timeout
    ) as response:
        body = await response.read()
    return Fetched(response.status, response.headers, body)


async def wait_for(condition: Callable[[], Any], what: str, within: float = POLL_TIMEOUT) -> None:
    """Poll ``condition`` (sync or async) until it is true; fail after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"not within {within}s: {what}")
        await asyncio.sleep(POLL_INTERVAL)


async def wait_for_hit(client: TestClient[Any, Any], key: str) -> None:
    """Poll with HEAD (which never starts a fill) until ``key`` is served from disk.

    A HEAD that hits counts as an access, like any hit."""

    async def hit() -> bool:
        return (await fetch(client, key, "HEAD")).x_cache == "HIT"

    await wait_for(hit, f"{key} served from the cache (X-Cache: HIT)")


async def sleep_until(moment: float) -> None:
    """Sleep until the monotonic clock reads ``moment``: for tests of timers."""
    await asyncio.sleep(max(0.0, moment - time.monotonic()))


@dataclass
class CacheRig:
    proxy: S3Proxy
    bucket: str
    s3: Any  # boto3 client straight to moto: writes "behind vidproxy's back"
    cache_dir: Path
    _make_config: Callable[..., Config]
    _start: Callable[[Config], Any]

    async def start(self, s3: dict[str, Any] | None = None, **cache: Any) -> TestClient[Any, Any]:
        """vidproxy on S3 through the proxy, its cache in ``cache_dir``."""
        settings = {"dir": str(self.cache_dir), "min_free_bytes": 0, **cache}
        s3 = {"endpoint_url": self.proxy.url, "read_timeout": S3_READ_TIMEOUT, **(s3 or {})}
        config = self._make_config("s3", cache=settings, s3=s3)
        return await self._start(config)

    async def upload(self, key: str, body: bytes) -> str:
        """Put ``body`` under ``key`` directly in moto; returns the ETag."""
        response = await asyncio.to_thread(
            self.s3.put_object, Bucket=self.bucket, Key=key, Body=body, ContentType=CONTENT_TYPE
        )
        return str(response["ETag"])

    def full_gets(self, key: str, size: int | None = None) -> int:
        return len(self.proxy.full_gets(self.bucket, key, size))

    def ranged_gets(self, key: str, size: int | None = None) -> int:
        return len(self.proxy.ranged_gets(self.bucket, key, size))

    def temp_files(self) -> list[Path]:
        tmp = self.cache_dir / "tmp"
        return sorted(tmp.iterdir()) if tmp.is_dir() else []


@pytest.fixture(name="cache_rig")
def cache_rig_fixture(
    s3_proxy: S3Proxy,
    s3: Any,
    bucket: str,
    tmp_path: Path,
    make_config: Callable[..., Config],
    start_vidproxy: Callable[[Config], Any],
) -> CacheRig:
    return CacheRig(s3_proxy, bucket, s3, tmp_path / "cache", make_config, start_vidproxy)
