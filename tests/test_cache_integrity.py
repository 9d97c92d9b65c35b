"""The cache never presents bytes that are not the object as a complete answer.

- a complete fill is checked against the object's digest (its recorded
  SHA-256, else an ETag that is its MD5) before it is a hit, and dropped if
  it does not match; the readers that followed it got what S3 sent, as a
  direct read would;
- an entry whose file no longer holds the recorded number of bytes answers
  ``500 object_damaged`` once, and is dropped;
- entries found at start are hashed again before they are hits.

Bad bytes come from the counting proxy (``corrupt``: one byte inverted on its
way from moto), from metadata that names another body's SHA-256, or from the
test changing an entry's file on disk.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path
from typing import Any

import pytest
from cache_rig import (
    CacheRig,
    cache_rig_fixture,  # noqa: F401
    fetch,
    random_bytes,
    wait_for,
    wait_for_hit,
)
from s3_proxy import s3_proxy_fixture  # noqa: F401

from vidproxy.units import MiB

SIZE = 3 * MiB + 11
FLIPPED_AT = 2 * MiB + 5  # a byte the first reader has long been sent when the fill ends


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def flipped(body: bytes, at: int) -> bytes:
    return body[:at] + bytes([body[at] ^ 0xFF]) + body[at + 1 :]


async def wait_for_damage_logged(caplog: pytest.LogCaptureFixture) -> None:
    await wait_for(
        lambda: any("is damaged" in r.getMessage() for r in caplog.records),
        "the check of the fill found its bytes damaged",
    )


# ---- fills --------------------------------------------------------------------------


@pytest.mark.parametrize("digest", ["sha256", "etag-md5"])
async def test_a_fill_with_corrupted_bytes_is_never_a_hit(
    cache_rig: CacheRig, digest: str, caplog: pytest.LogCaptureFixture
) -> None:
    body = random_bytes(SIZE, 40)
    metadata = {"sha256": sha256(body)} if digest == "sha256" else {}
    await cache_rig.upload("a.mp4", body, **metadata)
    client = await cache_rig.start()
    flip = cache_rig.proxy.corrupt(cache_rig.bucket, "a.mp4", at=FLIPPED_AT)

    with caplog.at_level(logging.ERROR, logger="vidproxy.cache"):
        first = await fetch(client, "a.mp4")
        await wait_for_damage_logged(caplog)

    # The first reader got what S3 sent, as a direct read would; the entry
    # the fill became was dropped by its check before anyone got it as a hit.
    assert flip.done.is_set()
    assert (first.status, first.x_cache, first.body) == (200, "MISS", flipped(body, FLIPPED_AT))
    await wait_for(lambda: not cache_rig.entry_files(), "the damaged entry's files removed")
    assert cache_rig.temp_files() == []
    again = await fetch(client, "a.mp4")  # S3 sends the right bytes this time
    assert (again.x_cache, again.body == body) == ("MISS", True)
    await wait_for_hit(client, "a.mp4")
    assert (await fetch(client, "a.mp4")).body == body


async def test_a_corrupted_fill_that_several_readers_followed_is_never_a_hit(
    cache_rig: CacheRig, caplog: pytest.LogCaptureFixture
) -> None:
    body = random_bytes(SIZE, 41)
    await cache_rig.upload("a.mp4", body, sha256=sha256(body))
    client = await cache_rig.start()
    rule = cache_rig.proxy.corrupt(cache_rig.bucket, "a.mp4", at=FLIPPED_AT, hold_after=MiB)
    with caplog.at_level(logging.ERROR, logger="vidproxy.cache"):
        first = asyncio.create_task(fetch(client, "a.mp4"))
        await rule.wait_reached()
        # Joined while the fill is held at 1 MiB: these follow the same fill.
        joined = [
            await client.get("/videos/a.mp4", headers={"Range": f"bytes={start}-"})
            for start in (100, SIZE - 10)
        ]
        rule.release()
        answers = [(await first).body, *[await response.read() for response in joined]]
        await wait_for_damage_logged(caplog)

    sent = flipped(body, FLIPPED_AT)
    assert [r.status for r in joined] == [206, 206]
    assert answers == [sent, sent[100:], sent[SIZE - 10 :]]
    assert cache_rig.full_gets("a.mp4") == 1
    assert (await fetch(client, "a.mp4", "HEAD")).x_cache == "MISS"


async def test_a_fill_that_matches_no_recorded_digest_is_not_kept(
    cache_rig: CacheRig, caplog: pytest.LogCaptureFixture
) -> None:
    # The bytes S3 holds are not those its metadata describes: damaged at the
    # source, or an overwrite that mixed two bodies.
    body = random_bytes(SIZE, 42)
    await cache_rig.upload("a.mp4", body, sha256=sha256(b"another body"))
    client = await cache_rig.start()

    with caplog.at_level(logging.ERROR, logger="vidproxy.cache"):
        first = await fetch(client, "a.mp4")
        await wait_for_damage_logged(caplog)

    assert (first.status, first.body == body) == (200, True)
    await wait_for(lambda: not cache_rig.entry_files(), "the damaged entry's files removed")
    assert (await fetch(client, "a.mp4", "HEAD")).x_cache == "MISS"
    assert any(sha256(b"another body") in r.getMessage() for r in caplog.records)


async def test_a_closed_range_is_not_held_back(cache_rig: CacheRig) -> None:
    # A range that ends before the object does cannot wait for the whole fill:
    # it gets what S3 sent, as a direct ranged GET would.
    body = random_bytes(SIZE, 43)
    await cache_rig.upload("a.mp4", body, sha256=sha256(body))
    client = await cache_rig.start()

    answer = await fetch(client, "a.mp4", Range="bytes=0-99999")

    assert (answer.status, answer.body) == (206, body[:100_000])


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


# ---- entries found at start -------------------------------------------------------------


def flip_byte(path: Path, at: int) -> None:
    with path.open("r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize("digest", ["sha256", "etag-md5", "none"])
async def test_flipped_bytes_found_at_start_are_never_a_hit(
    cache_rig: CacheRig, digest: str
) -> None:
    # "none": nothing says what the bytes must be, so the first check records
    # what they were, and the check after the restart compares with that.
    body = random_bytes(SIZE, 45)
    metadata = {"sha256": sha256(body)} if digest == "sha256" else {}
    await cache_rig.upload("a.mp4", body, **metadata)
    settings = {"verify_etag_md5": False} if digest == "none" else {}
    first = await cache_rig.start(**settings)
    await fetch(first, "a.mp4")
    await wait_for_hit(first, "a.mp4")
    await first.close()
    [data] = cache_rig.entry_files()
    flip_byte(data, FLIPPED_AT)

    second = await cache_rig.start(**settings)
    answers = [await fetch(second, "a.mp4")]
    await wait_for(lambda: not data.exists(), "the damaged entry dropped")
    answers.append(await fetch(second, "a.mp4"))
    await wait_for_hit(second, "a.mp4")
    answers.append(await fetch(second, "a.mp4"))

    assert [(a.status, a.x_cache, a.body == body) for a in answers] == [
        (200, "MISS", True),
        (200, "MISS", True),
        (200, "HIT", True),
    ]


async def test_an_intact_entry_found_at_start_is_a_hit_once_checked(cache_rig: CacheRig) -> None:
    body = random_bytes(SIZE, 46)
    await cache_rig.upload("a.mp4", body)
    first = await cache_rig.start()
    await fetch(first, "a.mp4")
    await wait_for_hit(first, "a.mp4")
    await first.close()

    second = await cache_rig.start()
    await wait_for_hit(second, "a.mp4")  # HEADs meanwhile: no GET
    answer = await fetch(second, "a.mp4")

    assert (answer.x_cache, answer.body == body) == ("HIT", True)
    assert cache_rig.full_gets("a.mp4") == 1


async def test_start_does_not_wait_for_the_check(
    cache_rig: CacheRig, caplog: pytest.LogCaptureFixture
) -> None:
    body = random_bytes(SIZE, 47)
    await cache_rig.upload("a.mp4", body)
    first = await cache_rig.start()
    await fetch(first, "a.mp4")
    await wait_for_hit(first, "a.mp4")
    await first.close()

    with caplog.at_level(logging.INFO, logger="vidproxy.cache"):
        # Checking SIZE bytes at 64 KiB/s takes close to a minute.
        second = await cache_rig.start(verify_bytes_per_second=64 * 1024)
        answer = await fetch(second, "a.mp4", Range="bytes=10-")

    assert (answer.status, answer.x_cache, answer.body == body[10:]) == (206, "MISS", True)
    assert not any("is checked" in r.getMessage() for r in caplog.records)
    await second.close()  # cancels the check


def test_a_fill_is_checked_by_sha256_alone_where_one_is_known() -> None:
    # MD5 as well would double a fill's hashing CPU (bench/: CPU seconds per GiB);
    # a record's SHA-256 is tied to this version's ETag and size already.
    from datetime import UTC, datetime

    from vidproxy.storage.base import ObjectInfo
    from vidproxy.storage.integrity import MD5, SHA256, Digest, expected_digests

    sha, md5 = "ab" * 32, "cd" * 16
    both = ObjectInfo("k", 1, f'"{md5}"', datetime.now(UTC), "video/mp4", sha, md5)
    only_md5 = ObjectInfo("k", 1, f'"{md5}"', datetime.now(UTC), "video/mp4", None, md5)
    assert expected_digests(both) == (Digest(SHA256, sha),)
    assert expected_digests(only_md5) == (Digest(MD5, md5),)
    assert expected_digests(only_md5, trust_etag_md5=False) == ()
