"""``rclone serve s3`` overwrites are not atomic: during one, a GET can carry
one version's bytes with another version's ETag or ``sha256`` metadata. The
cache must never keep such a fill: every HIT has bytes that are one whole
version, under that version's ETag (the ETag rclone reports is the body's
MD5). A MISS gets what rclone sent, as a direct read from rclone would.

Writers overwrite keys with boto3 straight to rclone (another replica, or any
other tool), while vidproxy reads each key cold (a fill during overwrites)
and, once that fill is over, again (a HIT of whatever the fill kept).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import boto3
import pytest
from botocore.config import Config as BotoConfig

from .support import ACCESS_KEY, REGION, SECRET_KEY, Vidproxy

pytestmark = pytest.mark.e2e

SIZE = 1024 * 1024 + 5
VERSIONS = 4
KEYS = 60
WRITERS = 3
GET_TIMEOUT = 30.0


def version_bodies() -> list[bytes]:
    return [random.Random(seed).randbytes(SIZE) for seed in range(VERSIONS)]


def rclone_client(url: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name=REGION,
        config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


class Overwriters:
    """Threads that put random versions under ``target`` until stopped."""

    def __init__(self, url: str, bucket: str, target: str, with_sha256: bool) -> None:
        self._url, self._bucket = url, bucket
        self.target = target  # the key being read: every write races that read
        self._with_sha256 = with_sha256
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(WRITERS)]
        self.puts = 0

    def put(self, s3: Any, key: str, body: bytes) -> None:
        metadata = {"sha256": hashlib.sha256(body).hexdigest()} if self._with_sha256 else {}
        s3.put_object(Bucket=self._bucket, Key=key, Body=body, Metadata=metadata)

    def _run(self, seed: int) -> None:
        s3, bodies, rng = rclone_client(self._url), version_bodies(), random.Random(seed)
        while not self._stop.is_set():
            try:
                self.put(s3, self.target, rng.choice(bodies))
                self.puts += 1
            except Exception:  # rclone refuses some racing writes; not what is tested
                time.sleep(0.01)

    def __enter__(self) -> Overwriters:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


async def get(session: aiohttp.ClientSession, url: str) -> tuple[str, str, bytes] | None:
    """X-Cache, ETag and body of a complete answer; None for a refusal (a 5xx,
    or a body cut short), which is an honest answer to a torn read."""
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=GET_TIMEOUT)) as response:
        if response.status >= 500:
            return None
        assert response.status == 200
        try:
            body = await response.read()
        except aiohttp.ClientPayloadError:
            return None
        return response.headers["X-Cache"], response.headers["ETag"].strip('"'), body


@pytest.mark.parametrize("vidproxy", ["rclone"], indirect=True)
@pytest.mark.parametrize("with_sha256", [True, False], ids=["sha256-and-etag", "etag-only"])
async def test_no_hit_mixes_versions(
    vidproxy: Vidproxy,
    rclone_url: str,
    with_sha256: bool,
    wait_until: Callable[..., Awaitable[None]],
) -> None:
    tag = "sha" if with_sha256 else "md5"
    keys = [f"e2e/versions-{tag}-{n}" for n in range(KEYS)]
    md5_of = {hashlib.md5(body).hexdigest(): body for body in version_bodies()}
    writers = Overwriters(rclone_url, vidproxy.bucket, keys[0], with_sha256)
    s3 = rclone_client(rclone_url)
    for key in keys:
        await asyncio.to_thread(writers.put, s3, key, version_bodies()[0])
    fills = vidproxy.workdir / "cache" / "tmp"

    async def fills_over() -> bool:
        return not any(fills.iterdir())

    cold: list[tuple[str, str, bytes] | None] = []
    warm: list[tuple[str, str, bytes] | None] = []
    async with aiohttp.ClientSession() as session:
        with writers:
            for key in keys:
                writers.target = key
                cold.append(await get(session, vidproxy.url(key)))  # a fill during overwrites
                await wait_until(fills_over, "the fill over, kept or not")
                warm.append(await get(session, vidproxy.url(key)))  # what it kept, if anything

    def mixed(answers: list[tuple[str, str, bytes] | None]) -> list[str]:
        complete = filter(None, answers)
        return [f"{x} {etag}" for x, etag, body in complete if md5_of.get(etag) != body]

    hits = [a for a in warm if a is not None and a[0] == "HIT"]
    refused = [a for a in cold + warm if a is None]
    figures = f"{writers.puts} puts, {len(hits)} hits, {len(refused)} refused"
    assert mixed(hits) == [], figures
    assert hits, figures
