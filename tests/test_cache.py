"""The disk cache in front of S3, over HTTP, against moto through a counting proxy.

What a test can see: status, headers (``X-Cache``), bytes, the requests the
proxy forwarded to S3, and the temp files left in ``<cache.dir>/tmp``.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from cache_rig import (
    CacheRig,
    cache_rig_fixture,  # noqa: F401
    fetch,
    random_bytes,
    wait_for,
    wait_for_hit,
)
from manual_clock import ManualClock
from rigs.threads import one_worker_thread
from s3_proxy import (
    BEFORE_HEADERS,
    s3_proxy_fixture,  # noqa: F401
)

from vidproxy.cache.fill import WRITE_AHEAD
from vidproxy.units import MiB

SMALL = 1 * MiB + 123  # where size does not matter
LARGE = 12 * MiB + 321  # more than two 5 MiB parts, where it does
FAR = 9 * MiB  # well past what a held fill has written
HOLD_AT = 1 * MiB  # where the proxy pauses a full-object GET
CONCURRENT_READERS = 16


async def test_miss_then_hit_is_byte_identical(cache_rig: CacheRig) -> None:
    body = random_bytes(SMALL, 1)
    await cache_rig.upload("a.mp4", body)
    client = await cache_rig.start()

    cold = await fetch(client, "a.mp4")
    await wait_for_hit(client, "a.mp4")
    warm = await fetch(client, "a.mp4")

    assert (cold.status, cold.x_cache, cold.body == body) == (200, "MISS", True)
    assert (warm.status, warm.x_cache, warm.body == body) == (200, "HIT", True)
    assert (cache_rig.full_gets("a.mp4"), cache_rig.ranged_gets("a.mp4")) == (1, 0)


async def test_a_fresh_hit_asks_s3_nothing(cache_rig: CacheRig) -> None:
    body = random_bytes(SMALL, 2)
    await cache_rig.upload("a.mp4", body)
    client = await cache_rig.start(revalidate_after=60)
    await fetch(client, "a.mp4")
    await wait_for_hit(client, "a.mp4")
    before = len(cache_rig.proxy.seen)

    for headers in ({}, {"Range": "bytes=100-199"}, {"If-None-Match": "*"}):
        assert (await fetch(client, "a.mp4", **headers)).x_cache == "HIT"
    assert (await fetch(client, "a.mp4", "HEAD")).x_cache == "HIT"

    assert cache_rig.proxy.seen[before:] == []


async def test_concurrent_cold_gets_make_one_s3_get(cache_rig: CacheRig) -> None:
    body = random_bytes(LARGE, 3)
    await cache_rig.upload("a.mp4", body)
    client = await cache_rig.start()

    answers = await asyncio.gather(*(fetch(client, "a.mp4") for _ in range(CONCURRENT_READERS)))

    assert [(a.status, a.body == body) for a in answers] == [(200, True)] * CONCURRENT_READERS
    assert {a.x_cache for a in answers} <= {"MISS", "HIT"}
    assert len(cache_rig.proxy.gets(cache_rig.bucket, "a.mp4")) == 1
    assert cache_rig.full_gets("a.mp4") == 1


async def test_concurrent_cold_ranges_near_the_start_make_one_s3_get(cache_rig: CacheRig) -> None:
    # What players send while they open a file: open ranges close to its start.
    body = random_bytes(LARGE, 4)
    await cache_rig.upload("a.mp4", body)
    client = await cache_rig.start()
    starts = [i * 64 * 1024 for i in range(CONCURRENT_READERS)]

    answers = await asyncio.gather(
        *(fetch(client, "a.mp4", Range=f"bytes={start}-") for start in starts)
    )

    assert [(a.status, a.body == body[s:]) for a, s in zip(answers, starts, strict=True)] == [
        (206, True)
    ] * CONCURRENT_READERS
    assert len(cache_rig.proxy.gets(cache_rig.bucket, "a.mp4")) == 1


@pytest.mark.parametrize(
    "headers", [{"If-Match": '"other"'}, {"Range": f"bytes={SMALL}-"}], ids=["412", "416"]
)
async def test_every_answer_about_an_object_says_where_it_came_from(
    cache_rig: CacheRig, headers: dict[str, str]
) -> None:
    await cache_rig.upload("a.mp4", random_bytes(SMALL, 29))
    client = await cache_rig.start()

    cold = await fetch(client, "a.mp4", **headers)
    await fetch(client, "a.mp4")
    await wait_for_hit(client, "a.mp4")
    warm = await fetch(client, "a.mp4", **headers)

    assert cold.status == warm.status != 200
    assert (cold.x_cache, warm.x_cache) == ("MISS", "HIT")


# ---- a fill in progress ----------------------------------------------------------


async def test_cold_range_far_into_the_object_is_answered_before_the_fill_completes(
    cache_rig: CacheRig,
) -> None:
    body = random_bytes(LARGE, 5)
    await cache_rig.upload("a.mp4", body)
    client = await cache_rig.start()
    hold = cache_rig.proxy.hold(cache_rig.bucket, "a.mp4", after=HOLD_AT)

    answer = await asyncio.wait_for(
        fetch(client, "a.mp4", Range=f"bytes={FAR}-{FAR + 99_999}"), timeout=10
    )

    assert (answer.status, answer.x_cache) == (206, "MISS")
    assert answer.headers["Content-Range"] == f"bytes {FAR}-{FAR + 99_999}/{LARGE}"
    assert answer.body == body[FAR : FAR + 100_000]
    await hold.wait_reached()  # the fill's GET goes out after the range's
    assert not hold.done.is_set()  # the fill is held: the range did not wait for it
    hold.release()
    await wait_for_hit(client, "a.mp4")
    assert (await fetch(client, "a.mp4")).body == body
    assert cache_rig.full_gets("a.mp4", LARGE) == 1


async def test_range_far_ahead_of_a_running_fill_is_not_kept_waiting(cache_rig: CacheRig) -> None:
    body = random_bytes(LARGE, 6)
    await cache_rig.upload("a.mp4", body)
    client = await cache_rig.start()
    hold = cache_rig.proxy.hold(cache_rig.bucket, "a.mp4", after=HOLD_AT)
    first = asyncio.create_task(fetch(client, "a.mp4"))
    await hold.wait_reached()

    # A player seeking to the end while another viewer's fill is at 1 MiB.
    seek = await asyncio.wait_for(fetch(client, "a.mp4", Range="bytes=-100000"), timeout=10)

    assert (seek.status, seek.body == body[-100_000:]) == (206, True)
    assert not hold.done.is_set()
    hold.release()
    assert (await first).body == body
    await wait_for_hit(client, "a.mp4")
    assert cache_rig.full_gets("a.mp4", LARGE) == 1


async def test_a_client_that_leaves_does_not_stop_the_fill(cache_rig: CacheRig) -> None:
    body = random_bytes(LARGE, 7)
    await cache_rig.upload("a.mp4", body)
    client = await cache_rig.start()
    hold = cache_rig.proxy.hold(cache_rig.bucket, "a.mp4", after=HOLD_AT)

    await _leave_early(client, "a.mp4")
    await hold.wait_reached()
    hold.release()

    await wait_for_hit(client, "a.mp4")
    assert (await fetch(client, "a.mp4")).body == body
    assert cache_rig.full_gets("a.mp4", LARGE) == 1


async def test_without_fill_on_disconnect_a_client_that_leaves_stops_the_fill(
    cache_rig: CacheRig,
) -> None:
    # The counterpart of the test above, on the same timing: it shows the
    # disconnect is noticed while the fill still has most of the object to go.
    body = random_bytes(LARGE, 8)
    await cache_rig.upload("a.mp4", body)
    client = await cache_rig.start(fill_on_disconnect=False)
    hold = cache_rig.proxy.hold(cache_rig.bucket, "a.mp4", after=HOLD_AT)

    await _leave_early(client, "a.mp4")
    await hold.wait_reached()
    hold.release()

    await wait_for(lambda: not cache_rig.temp_files(), "the abandoned fill's temp file removed")
    assert (await fetch(client, "a.mp4", "HEAD")).x_cache == "MISS"
    assert cache_rig.full_gets("a.mp4", LARGE) == 1


async def test_every_byte_before_a_stalled_backend_reaches_the_client(cache_rig: CacheRig) -> None:
    # The S3 reader joins small socket reads into larger pieces; a piece
    # short of that size must still go on while S3 sends nothing more.
    body = random_bytes(LARGE, 32)
    await cache_rig.upload("a.mp4", body)
    client = await cache_rig.start()
    stall_at = 200 * 1024  # less than one joined piece
    hold = cache_rig.proxy.hold(cache_rig.bucket, "a.mp4", after=stall_at)
    response = await client.get("/videos/a.mp4")
    await hold.wait_reached()

    before = await asyncio.wait_for(response.content.readexactly(stall_at), timeout=5)

    assert before == body[:stall_at]
    hold.release()
    assert before + await response.read() == body


async def test_shutdown_stops_a_fill_a_write_made_stale_and_leaves_no_temp_file(
    cache_rig: CacheRig,
) -> None:
    body = random_bytes(LARGE, 31)
    await cache_rig.upload("a.mp4", body)
    client = await cache_rig.start()
    hold = cache_rig.proxy.hold(cache_rig.bucket, "a.mp4", after=LARGE // 2)
    await _leave_early(client, "a.mp4")
    await hold.wait_reached()
    await wait_for(cache_rig.temp_files, "the fill writing its temp file")
    # No request may join the fill any more; it runs on, held at S3.
    assert (await client.delete("/videos/a.mp4")).status == 204

    await client.close()

    assert cache_rig.temp_files() == []
    hold.release()


async def test_shutdown_while_fills_commit_leaves_no_temp_file(cache_rig: CacheRig) -> None:
    # A fill's last steps (fsync, commit; the unlink of a failed one) run in
    # worker threads after its client has every byte, and shutdown cancels
    # them there. A commit still queued for a thread went with the cancel and
    # left its temp file (the soak test found two). One worker thread keeps
    # the fills' last steps queued when the shutdown comes.
    one_worker_thread()
    # Each under WRITE_AHEAD, so its client is not held up by the queued writes.
    size = WRITE_AHEAD // 2
    bodies = {f"v{number}.mp4": random_bytes(size, 40 + number) for number in range(12)}
    for key, body in bodies.items():
        await cache_rig.upload(key, body)
    client = await cache_rig.start()

    fetched = await asyncio.gather(*(fetch(client, key) for key in bodies))
    await client.close()

    assert [f.body for f in fetched] == list(bodies.values())
    assert cache_rig.temp_files() == []


async def _leave_early(client: TestClient[Any, Any], key: str) -> None:
    """Start a GET, read its first bytes, then close the connection."""
    response = await client.get(f"/videos/{key}")
    assert (response.status, response.headers["X-Cache"]) == (200, "MISS")
    await response.content.readexactly(64 * 1024)
    response.close()


async def test_s3_breaking_off_mid_fill_still_gives_every_byte(cache_rig: CacheRig) -> None:
    body = random_bytes(LARGE, 9)
    await cache_rig.upload("a.mp4", body)
    client = await cache_rig.start()
    cut = cache_rig.proxy.hold(cache_rig.bucket, "a.mp4", after=3 * MiB, cut=True)

    answer = await fetch(client, "a.mp4")

    assert cut.done.is_set()
    assert (answer.status, len(answer.body), answer.body == body) == (200, LARGE, True)
    await wait_for(lambda: not cache_rig.temp_files(), "the failed fill's temp file removed")
    assert (await fetch(client, "a.mp4", "HEAD")).x_cache == "MISS"  # nothing half-kept
    assert (await fetch(client, "a.mp4")).body == body
    await wait_for_hit(client, "a.mp4")


async def test_the_rest_of_a_cut_fill_never_comes_from_another_version(
    cache_rig: CacheRig,
) -> None:
    # S3 breaks off a fill; the object was overwritten meanwhile, and the store
    # ignores If-Match (rclone does): the reader must not get the old bytes'
    # start with the new bytes' end as one complete answer.
    old, new = random_bytes(LARGE, 31), random_bytes(LARGE, 32)
    await cache_rig.upload("a.mp4", old)
    client = await cache_rig.start()
    cache_rig.proxy.ignore_if_match = True
    rule = cache_rig.proxy.hold(cache_rig.bucket, "a.mp4", after=HOLD_AT, cut_at=3 * MiB)
    response = await client.get("/videos/a.mp4")
    await rule.wait_reached()

    await cache_rig.upload("a.mp4", new)
    rule.release()

    assert (response.status, response.headers["ETag"]) == (200, md5_etag(old))
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()
    assert (await fetch(client, "a.mp4")).body == new


def md5_etag(body: bytes) -> str:
    return f'"{hashlib.md5(body).hexdigest()}"'


async def test_overwrite_during_a_fill_is_not_kept(cache_rig: CacheRig) -> None:
    old, new = random_bytes(LARGE, 10), random_bytes(SMALL, 11)
    await cache_rig.upload("a.mp4", old)
    client = await cache_rig.start()
    hold = cache_rig.proxy.hold(cache_rig.bucket, "a.mp4", after=HOLD_AT)
    reading = asyncio.create_task(fetch(client, "a.mp4"))
    await hold.wait_reached()

    assert (await client.put("/videos/a.mp4", data=new)).status == 201
    hold.release()

    assert (await reading).body == old  # the version its headers named
    await wait_for(lambda: not cache_rig.temp_files(), "the stale fill's temp file removed")
    after = await fetch(client, "a.mp4")
    assert (after.x_cache, after.body == new) == ("MISS", True)
    await wait_for_hit(client, "a.mp4")
    assert (await fetch(client, "a.mp4")).body == new


async def test_a_get_after_an_overwrite_never_joins_the_fill_of_the_old_bytes(
    cache_rig: CacheRig,
) -> None:
    # A cold GET has S3's answer (the old bytes) on its way when an upload of
    # new bytes completes; a GET sent after the upload's 201 must get the new ones.
    old, new = random_bytes(LARGE, 27), random_bytes(SMALL, 28)
    await cache_rig.upload("a.mp4", old)
    client = await cache_rig.start()
    hold = cache_rig.proxy.hold(cache_rig.bucket, "a.mp4", after=BEFORE_HEADERS)
    before = asyncio.create_task(fetch(client, "a.mp4"))
    await hold.wait_reached()

    assert (await client.put("/videos/a.mp4", data=new)).status == 201
    after = asyncio.create_task(fetch(client, "a.mp4"))
    hold.release()

    assert (await before).body == old  # sent before the upload finished: either is right
    assert (await after).body == new


# ---- writes, revalidation ------------------------------------------------------------


async def test_overwrite_through_the_api_then_get_returns_the_new_bytes(
    cache_rig: CacheRig,
) -> None:
    old, new = random_bytes(SMALL, 12), random_bytes(SMALL + 1000, 13)
    client = await cache_rig.start()
    assert (await client.put("/videos/a.mp4", data=old)).status == 201
    await fetch(client, "a.mp4")
    await wait_for_hit(client, "a.mp4")

    put = await client.put("/videos/a.mp4", data=new)
    assert put.status == 201
    after = await fetch(client, "a.mp4")

    assert (after.status, after.x_cache, after.body == new) == (200, "MISS", True)
    assert after.headers["ETag"] == (await put.json())["etag"]
    await wait_for_hit(client, "a.mp4")
    assert (await fetch(client, "a.mp4")).body == new


async def test_delete_through_the_api_drops_the_entry(cache_rig: CacheRig) -> None:
    await cache_rig.upload("a.mp4", random_bytes(SMALL, 14))
    client = await cache_rig.start()
    await fetch(client, "a.mp4")
    await wait_for_hit(client, "a.mp4")

    assert (await client.delete("/videos/a.mp4")).status == 204

    assert (await fetch(client, "a.mp4")).status == 404


async def test_revalidation_drops_an_entry_replaced_behind_its_back(cache_rig: CacheRig) -> None:
    old, new = random_bytes(SMALL, 15), random_bytes(SMALL, 16)
    await cache_rig.upload("a.mp4", old)
    client = await cache_rig.start(revalidate_after=0)
    await fetch(client, "a.mp4")
    await wait_for_hit(client, "a.mp4")

    new_etag = await cache_rig.upload("a.mp4", new)  # straight to S3, not through vidproxy
    after = await fetch(client, "a.mp4")

    assert (after.status, after.x_cache, after.body == new) == (200, "MISS", True)
    assert after.headers["ETag"] == new_etag
    await wait_for_hit(client, "a.mp4")
    assert (await fetch(client, "a.mp4")).body == new


async def test_revalidation_drops_an_entry_deleted_behind_its_back(cache_rig: CacheRig) -> None:
    await cache_rig.upload("a.mp4", random_bytes(SMALL, 17))
    client = await cache_rig.start(revalidate_after=0)
    await fetch(client, "a.mp4")
    await wait_for_hit(client, "a.mp4")

    await asyncio.to_thread(cache_rig.s3.delete_object, Bucket=cache_rig.bucket, Key="a.mp4")

    assert (await fetch(client, "a.mp4")).status == 404


async def test_a_hit_is_revalidated_once_revalidate_after_has_passed(cache_rig: CacheRig) -> None:
    old, new = random_bytes(SMALL, 42), random_bytes(SMALL, 43)
    await cache_rig.upload("a.mp4", old)
    clock = ManualClock()
    client = await cache_rig.start(clock=clock, revalidate_after=60, idle_ttl=3600)
    await fetch(client, "a.mp4")
    await wait_for_hit(client, "a.mp4")  # checked against S3 when filled, at 0
    await cache_rig.upload("a.mp4", new)  # straight to S3, not through vidproxy

    clock.advance(59)
    before = await fetch(client, "a.mp4")
    clock.advance(1)
    after = await fetch(client, "a.mp4")

    assert (before.x_cache, before.body == old) == ("HIT", True)
    assert (after.x_cache, after.body == new) == ("MISS", True)


# ---- idle timers, the byte bound ------------------------------------------------------


async def test_a_hit_resets_the_idle_timer_and_idleness_expires_the_entry(
    cache_rig: CacheRig,
) -> None:
    ttl, clock = 100.0, ManualClock()
    body = random_bytes(SMALL, 18)
    await cache_rig.upload("a.mp4", body)
    client = await cache_rig.start(clock=clock, idle_ttl=ttl)
    await fetch(client, "a.mp4")
    await wait_for_hit(client, "a.mp4")  # the clock stands still: every hit is at 0

    clock.advance(0.6 * ttl)
    assert (await fetch(client, "a.mp4")).x_cache == "HIT"  # re-armed until 1.6 ttl
    clock.advance(0.6 * ttl)  # past the first expiry, not the re-armed one
    assert (await fetch(client, "a.mp4")).x_cache == "HIT"  # re-armed until 2.2 ttl
    clock.advance(ttl)
    expired = await fetch(client, "a.mp4")

    assert (expired.x_cache, expired.body == body) == ("MISS", True)
    assert cache_rig.full_gets("a.mp4") == 2


async def test_lru_entries_are_evicted_to_stay_under_the_byte_bound(cache_rig: CacheRig) -> None:
    bodies = {key: random_bytes(SMALL, seed) for seed, key in enumerate("abc", 19)}
    for key, body in bodies.items():
        await cache_rig.upload(key, body)
    # Room for two of the three objects.
    client = await cache_rig.start(max_bytes=int(2.5 * SMALL))
    for key in ("a", "b"):
        await fetch(client, key)
        await wait_for_hit(client, key)
    assert (await fetch(client, "a")).x_cache == "HIT"  # b is now the least recently used

    await fetch(client, "c")
    await wait_for_hit(client, "c")

    cached = {key: (await fetch(client, key, "HEAD")).x_cache for key in "acb"}
    assert cached == {"a": "HIT", "b": "MISS", "c": "HIT"}
    assert [cache_rig.full_gets(key) for key in "abc"] == [1, 1, 1]


async def test_an_object_over_max_object_bytes_is_streamed_not_kept(cache_rig: CacheRig) -> None:
    body = random_bytes(SMALL, 22)
    await cache_rig.upload("a.mp4", body)
    client = await cache_rig.start(max_object_bytes=SMALL - 1)

    answers = [await fetch(client, "a.mp4") for _ in range(2)]

    assert [(a.x_cache, a.body == body) for a in answers] == [("MISS", True)] * 2
    assert cache_rig.full_gets("a.mp4") == 2
    assert cache_rig.temp_files() == []
