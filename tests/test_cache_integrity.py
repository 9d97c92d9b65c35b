"""The cache never presents bytes that are not the object as a complete answer.

- an entry whose file no longer holds the recorded number of bytes answers
  ``500 object_damaged`` once, and is dropped.

Bad bytes come from the test changing an entry's file on disk.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cache_rig import (
    CacheRig,
    cache_rig_fixture,  # noqa: F401
    fetch,
    random_bytes,
    wait_for_hit,
)
from s3_proxy import s3_proxy_fixture  # noqa: F401

from vidproxy.units import MiB

SIZE = 3 * MiB + 11


# ---- entries changed on disk ----------------------------------------------------------


def truncate(path: Path) -> None:
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)


def grow(path: Path) -> None:
    with path.open("ab") as f:
        f.write(b"appended")


@pytest.mark.parametrize("change", [truncate, grow], ids=["truncated", "grown"])
async def test_an_entry_of_the_wrong_size_is_never_a_hit(cache_rig: CacheRig, change: Any) -> None:
    body = random_bytes(SIZE, 44)
    await cache_rig.upload("a.mp4", body)
    client = await cache_rig.start()
    await fetch(client, "a.mp4")
    await wait_for_hit(client, "a.mp4")
    [data] = cache_rig.entry_files()

    change(data)
    damaged = await client.get("/videos/a.mp4")
    refetched = await fetch(client, "a.mp4")

    assert damaged.status == 500
    assert (await damaged.json())["error"] == "object_damaged"
    assert (refetched.status, refetched.x_cache, refetched.body == body) == (200, "MISS", True)
    await wait_for_hit(client, "a.mp4")
    assert (await fetch(client, "a.mp4", Range="bytes=5-")).body == body[5:]
