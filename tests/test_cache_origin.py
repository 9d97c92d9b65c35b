"""A cache directory remembers which bucket filled it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vidproxy.config import Config

IMMUTABLE = {"revalidate_after": -1}  # only the origin check can tell the buckets apart


async def wait_for_hit(client: Any, key: str) -> None:
    for _ in range(200):
        response = await client.head(f"/videos/{key}")
        if response.headers.get("X-Cache") == "HIT":
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{key} never became a cache hit")


async def test_a_cache_dir_reused_for_another_bucket_serves_that_bucket(
    make_config: Callable[..., Config],
    start_vidproxy: Callable[..., Any],
    s3: Any,
    bucket: str,
    tmp_path: Path,
) -> None:
    other = f"test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=other)
    s3.put_object(Bucket=bucket, Key="v.mp4", Body=b"first bucket")
    s3.put_object(Bucket=other, Key="v.mp4", Body=b"second bucket")
    cache = {"dir": str(tmp_path / "shared-cache"), **IMMUTABLE}

    first = await start_vidproxy(make_config("s3", cache=cache))
    assert await (await first.get("/videos/v.mp4")).read() == b"first bucket"
    await wait_for_hit(first, "v.mp4")
    await first.close()

    second = await start_vidproxy(make_config("s3", cache=cache, s3={"bucket": other}))
    response = await second.get("/videos/v.mp4")
    assert (response.headers["X-Cache"], await response.read()) == ("MISS", b"second bucket")
