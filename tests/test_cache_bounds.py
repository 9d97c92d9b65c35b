"""``cache.max_bytes`` and ``cache.min_free_bytes`` hold for the bytes really on
disk, while slow readers keep entries in use.

A slow reader (``slow_readers``) reads an answer's head and then stops, so the
server's send stalls and what it reads stays in use: a HIT's data file, or a
fill's descriptor (which its readers keep reading after the fill has become an
entry). The bound is measured, not taken from vidproxy's own figures: the bytes
of every file under ``cache.dir`` plus those unlinked but still open in the
process (``bytes_under``), and, on a tmpfs, the free space the filesystem
reports. Both are sampled every 5 ms while objects that do not fit are read.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from cache_rig import (
    CacheRig,
    DiskSampler,
    MountTmpfs,
    SlowReaders,
    bytes_under,
    cache_rig_fixture,  # noqa: F401
    fetch,
    free_bytes,
    random_bytes,
    slow_readers_fixture,  # noqa: F401
    tmpfs_fixture,  # noqa: F401
    wait_for,
    wait_for_hit,
)
from s3_proxy import s3_proxy_fixture  # noqa: F401

from vidproxy.units import KiB, MiB

SIZE = 8 * MiB + 17  # each object: far more than a stalled socket takes in
KEYS = [f"v{n}.mp4" for n in range(4)]
HELD = KEYS[:2]  # read slowly, so in use for the whole test
LATER = KEYS[2:]  # read afterwards: no room for them unless a held entry goes
METADATA_ALLOWANCE = 64 * KiB  # the entries' metadata files, not counted by max_bytes
TMPFS_BYTES = 40 * MiB
MIN_FREE = 20 * MiB  # on TMPFS_BYTES: room for two SIZE entries, not three


async def _upload_all(cache_rig: CacheRig) -> dict[str, bytes]:
    bodies = {key: random_bytes(SIZE, seed) for seed, key in enumerate(KEYS, 80)}
    for key, body in bodies.items():
        await cache_rig.upload(key, body)
    return bodies


async def _hold(
    client: TestClient[Any, Any], slow_readers: SlowReaders, key: str, kind: str
) -> None:
    """Leave ``key`` cached and in use by a slow reader of ``kind``: "hit" reads
    the entry's file, "fill" the fill that made the entry."""
    if kind == "hit":
        await fetch(client, key)
        await wait_for_hit(client, key)
    headers = await slow_readers.open(client, key)
    assert headers["X-Cache"] == ("HIT" if kind == "hit" else "MISS")
    await wait_for_hit(client, key)


async def _read_the_rest(
    cache_rig: CacheRig, client: TestClient[Any, Any], bodies: dict[str, bytes]
) -> None:
    for key in LATER:
        answer = await fetch(client, key)
        assert (answer.status, answer.body == bodies[key]) == (200, True)
    await wait_for(lambda: not cache_rig.temp_files(), "every fill over")


@pytest.mark.parametrize("kind", ["hit", "fill"])
async def test_max_bytes_holds_while_readers_keep_entries_in_use(
    cache_rig: CacheRig, slow_readers: SlowReaders, kind: str
) -> None:
    bodies = await _upload_all(cache_rig)
    max_bytes = 2 * SIZE + METADATA_ALLOWANCE
    client = await cache_rig.start(max_bytes=max_bytes)
    for key in HELD:
        await _hold(client, slow_readers, key, kind)

    with DiskSampler(lambda: bytes_under(cache_rig.cache_dir)) as disk:
        await _read_the_rest(cache_rig, client, bodies)

    assert disk.highest <= max_bytes
    # Served from S3 without being kept; what is in use stays a hit.
    cached = {key: (await fetch(client, key, "HEAD")).x_cache for key in KEYS}
    assert cached == {"v0.mp4": "HIT", "v1.mp4": "HIT", "v2.mp4": "MISS", "v3.mp4": "MISS"}


async def test_an_entry_no_longer_in_use_makes_room_again(
    cache_rig: CacheRig, slow_readers: SlowReaders
) -> None:
    bodies = await _upload_all(cache_rig)
    max_bytes = 2 * SIZE + METADATA_ALLOWANCE
    client = await cache_rig.start(max_bytes=max_bytes)
    await _hold(client, slow_readers, HELD[0], "fill")
    await fetch(client, HELD[1])
    await wait_for_hit(client, HELD[1])

    with DiskSampler(lambda: bytes_under(cache_rig.cache_dir)) as disk:
        await fetch(client, LATER[0])  # evicts the idle entry, not the one in use
        await wait_for_hit(client, LATER[0])

    assert disk.highest <= max_bytes
    assert (await fetch(client, LATER[0])).body == bodies[LATER[0]]
    cached = {key: (await fetch(client, key, "HEAD")).x_cache for key in KEYS[:3]}
    assert cached == {"v0.mp4": "HIT", "v1.mp4": "MISS", "v2.mp4": "HIT"}


async def test_min_free_bytes_holds_while_readers_keep_entries_in_use(
    cache_rig: CacheRig,
    slow_readers: SlowReaders,
    tmpfs: MountTmpfs,
    caplog: pytest.LogCaptureFixture,
) -> None:
    disk = tmpfs("small", size=TMPFS_BYTES)
    cache_rig.cache_dir = disk / "cache"
    bodies = await _upload_all(cache_rig)
    client = await cache_rig.start(min_free_bytes=MIN_FREE, max_bytes=4 * TMPFS_BYTES)
    for key in HELD:
        await _hold(client, slow_readers, key, "fill")

    with caplog.at_level(logging.ERROR), DiskSampler(lambda: free_bytes(disk)) as free:
        await _read_the_rest(cache_rig, client, bodies)

    assert free.lowest >= MIN_FREE
    assert [r.getMessage() for r in caplog.records if r.name.startswith("vidproxy.cache")] == []
    await slow_readers.close()
    await client.close()  # before the tmpfs goes
