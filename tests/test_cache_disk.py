"""The cache's files: kept across a restart, and a disk that fills up or runs
out of inodes (a tmpfs of a few MiB mounted for the test; skipped where
mounting is not allowed).

What a test can see: status, ``X-Cache``, bytes, the requests the proxy
forwarded to S3, and the temp files left in ``<cache.dir>/tmp``.
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
from pathlib import Path

from cache_rig import (
    CacheRig,
    MountTmpfs,
    cache_rig_fixture,  # noqa: F401
    fetch,
    random_bytes,
    tmpfs_fixture,  # noqa: F401
    wait_for,
    wait_for_hit,
)
from manual_clock import ManualClock
from s3_proxy import s3_proxy_fixture  # noqa: F401

from vidproxy.units import MiB

SMALL = 1 * MiB + 123
LARGE = 12 * MiB + 321  # more than two 5 MiB parts
FAR = 9 * MiB  # a seek well into LARGE


# ---- restart --------------------------------------------------------------------------


async def test_restart_keeps_entries_and_deletes_temp_files(cache_rig: CacheRig) -> None:
    body = random_bytes(SMALL, 23)
    await cache_rig.upload("a.mp4", body)
    first = await cache_rig.start()
    await fetch(first, "a.mp4")
    await wait_for_hit(first, "a.mp4")
    await first.close()
    leftover = cache_rig.cache_dir / "tmp" / "01ARZ3NDEKTSV4RRFFQ69G5FAV.part"
    leftover.write_bytes(b"half a fill")

    second = await cache_rig.start()
    await wait_for_hit(second, "a.mp4")  # once hashed again (test_cache_integrity.py)
    answer = await fetch(second, "a.mp4")

    assert not leftover.exists()
    assert (answer.status, answer.x_cache, answer.body == body) == (200, "HIT", True)
    assert cache_rig.full_gets("a.mp4") == 1


async def test_restart_arms_idle_timers_from_the_last_access(cache_rig: CacheRig) -> None:
    ttl, clock = 100.0, ManualClock()
    body = random_bytes(SMALL, 24)
    await cache_rig.upload("a.mp4", body)
    first = await cache_rig.start(clock=clock, idle_ttl=ttl)
    await fetch(first, "a.mp4")
    await wait_for_hit(first, "a.mp4")  # the clock stands still: the last access is at 0
    await first.close()

    clock.advance(0.6 * ttl)
    second = await cache_rig.start(clock=clock, idle_ttl=ttl)
    kept = cache_rig.entry_files()
    # Expired at ttl; a timer armed at the restart would run until 1.6 ttl.
    clock.advance(0.5 * ttl)

    assert kept != []
    await wait_for(lambda: not cache_rig.entry_files(), "the expired entry's files removed")
    again = await fetch(second, "a.mp4")
    assert (again.x_cache, again.body == body) == ("MISS", True)


# ---- a disk that fills up ---------------------------------------------------------------

TINY_FS_BYTES = 16 * MiB  # room for one LARGE object, until something else takes it


def fill_disk(path: Path) -> None:
    """Write ``path`` until its filesystem has no space left (ENOSPC)."""
    block = b"\0" * MiB
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(block)
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise


def use_inodes(directory: Path, leave: int) -> None:
    """Create empty files in ``directory`` until only ``leave`` inodes are free."""
    directory.mkdir()
    for number in range(os.statvfs(directory).f_ffree - leave):
        (directory / str(number)).touch()


async def test_a_fill_never_eats_into_min_free_bytes(
    tmpfs: MountTmpfs, cache_rig: CacheRig
) -> None:
    disk = tmpfs("tiny", size=TINY_FS_BYTES)
    small, large = random_bytes(100 * 1024, 31), random_bytes(2 * MiB, 32)
    await cache_rig.upload("small.mp4", small)
    await cache_rig.upload("large.mp4", large)
    cache_rig.cache_dir = disk / "cache"
    # Room for the small object above the floor, not for the large one.
    client = await cache_rig.start(min_free_bytes=TINY_FS_BYTES - MiB)

    answers = [await fetch(client, key) for key in ("large.mp4", "large.mp4", "small.mp4")]
    await wait_for_hit(client, "small.mp4")

    assert [a.body for a in answers] == [large, large, small]
    assert cache_rig.full_gets("large.mp4") == 2  # streamed each time, never kept
    assert (await fetch(client, "large.mp4", "HEAD")).x_cache == "MISS"
    await client.close()  # before the tmpfs goes


async def test_disk_full_during_a_fill_still_gives_every_byte(
    tmpfs: MountTmpfs, cache_rig: CacheRig
) -> None:
    disk = tmpfs("tiny", size=TINY_FS_BYTES)
    body = random_bytes(LARGE, 25)
    await cache_rig.upload("a.mp4", body)
    cache_rig.cache_dir = disk / "cache"
    client = await cache_rig.start(max_bytes=TINY_FS_BYTES * 4)
    hold = cache_rig.proxy.hold(cache_rig.bucket, "a.mp4", after=2 * MiB)
    reading = asyncio.create_task(fetch(client, "a.mp4"))
    await hold.wait_reached()

    # Something else on the same disk takes the room the fill was counting on.
    await asyncio.to_thread(fill_disk, disk / "other-tenant")
    hold.release()
    answer = await reading

    assert (answer.status, len(answer.body), answer.body == body) == (200, LARGE, True)
    await wait_for(lambda: not cache_rig.temp_files(), "the failed fill's temp file removed")
    again = await fetch(client, "a.mp4")  # the disk is still full
    assert (again.status, again.x_cache, again.body == body) == (200, "MISS", True)
    (disk / "other-tenant").unlink()
    await fetch(client, "a.mp4")
    await wait_for_hit(client, "a.mp4")
    assert (await fetch(client, "a.mp4")).body == body
    await client.close()  # before the tmpfs goes


async def test_a_fill_that_cannot_be_kept_leaves_no_bytes_behind(
    tmpfs: MountTmpfs, cache_rig: CacheRig
) -> None:
    # The data is all on disk, then keeping it fails (no inode left for its
    # metadata): its bytes must not stay on the disk, unaccounted for.
    disk = tmpfs("tiny", size=TINY_FS_BYTES, nr_inodes=64)
    body = random_bytes(LARGE, 26)
    cache_rig.cache_dir = disk / "cache"
    client = await cache_rig.start(max_bytes=TINY_FS_BYTES * 4)
    assert (await client.put("/videos/a.mp4", data=body)).status == 201
    await fetch(client, "a.mp4")
    await wait_for_hit(client, "a.mp4")
    assert (await client.put("/videos/a.mp4", data=body)).status == 201  # drops the entry
    await wait_for(lambda: disk_bytes(disk) < LARGE, "the dropped entry's data removed")

    await asyncio.to_thread(use_inodes, disk / "other-tenant", leave=1)
    answer = await fetch(client, "a.mp4")
    await wait_for(lambda: not cache_rig.temp_files(), "the fill over")
    shutil.rmtree(disk / "other-tenant")

    assert (answer.status, answer.body == body) == (200, True)
    await fetch(client, "a.mp4")  # the disk has room for it again
    await wait_for_hit(client, "a.mp4")
    await client.close()  # before the tmpfs goes


def disk_bytes(root: Path) -> int:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file())


async def test_seeks_keep_working_while_the_cache_cannot_create_files(
    tmpfs: MountTmpfs, cache_rig: CacheRig
) -> None:
    # A cold seek far ahead opens two S3 GETs: the range, and the whole object
    # for a fill. When the fill cannot start, the second must be let go, or
    # every such seek keeps one S3 connection (here: one of two) for good.
    disk = tmpfs("tiny", size=TINY_FS_BYTES, nr_inodes=64)
    body = random_bytes(LARGE, 30)
    await cache_rig.upload("a.mp4", body)
    cache_rig.cache_dir = disk / "cache"
    client = await cache_rig.start(s3={"max_pool_connections": 2})
    await asyncio.to_thread(use_inodes, disk / "other-tenant", leave=0)

    answers = [await fetch(client, "a.mp4", Range=f"bytes={FAR}-{FAR + 99}") for _ in range(3)]

    assert [(a.status, a.body) for a in answers] == [(206, body[FAR : FAR + 100])] * 3
    assert cache_rig.temp_files() == []
    await client.close()  # before the tmpfs goes
