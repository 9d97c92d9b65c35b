"""The Range and conditional matrix over HTTP: the same answers whichever path serves.

Three servings, each one vidproxy started once for this module: the fs store
(sendfile), S3 without the cache (S3 ranged GETs), and S3 with a warm disk cache
(sendfile of the cached copy). Most cases read the objects uploaded at the
start; the first reads of a fresh upload (on S3 with the cache: a cold cache,
so a fill or a direct ranged GET) upload a key of their own. Garbage in
``Range`` is answered at once with what RFC 9110 allows. The decision itself is
tested without HTTP in test_conditions.py; cold and warm cache answers are held
against each other in test_cache_matrix.py.
"""

from __future__ import annotations

import json
import random
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient
from cache_rig import wait_for_hit
from conftest import NO_STALE_UPLOAD_SWEEP, PART_SIZE
from rigs.app import serving

from vidproxy.config import load_config

pytestmark = pytest.mark.asyncio(loop_scope="module")

SIZE = 10_000
BODY = random.Random(7).randbytes(SIZE)
BIG = random.Random(8).randbytes(2 * PART_SIZE + 1000)
SERVINGS = ["fs", "s3", "s3-cached"]
QUICK = 3.0  # seconds: garbage in Range is answered at least this fast, never parsed slowly


@dataclass(frozen=True)
class Served:
    name: str
    client: TestClient[Any, Any]
    etag: str
    last_modified: str


def layers(serving: str, root: Path, moto_endpoint: str) -> dict[str, dict[str, Any]]:
    config: dict[str, dict[str, Any]] = {
        "fs": {"dir": str(root / "data")},
        "cache": {"dir": str(root / "cache"), "enabled": serving == "s3-cached"},
    }
    if serving != "fs":
        bucket = f"ranges-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=bucket)
        config["s3"] = {
            "bucket": bucket,
            "endpoint_url": moto_endpoint,
            "addressing_style": "path",
            "part_size": PART_SIZE,
            "max_attempts": 1,
            **NO_STALE_UPLOAD_SWEEP,
        }
    return config


async def warm(client: TestClient[Any, Any], key: str) -> None:
    """Read ``key`` whole, then poll until the cache answers it from disk."""
    await (await client.get(f"/videos/{key}")).read()
    await wait_for_hit(client, key)


@pytest_asyncio.fixture(scope="module", loop_scope="module", params=SERVINGS)
async def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, moto_endpoint: str
) -> AsyncIterator[Served]:
    root = tmp_path_factory.mktemp(request.param)
    config = load_config(None, env={}, overrides=layers(request.param, root, moto_endpoint))
    async with serving(config) as client:
        for key, body in (("data", BODY), ("big", BIG), ("empty", b"")):
            response = await client.put(f"/videos/{key}", data=body)
            assert response.status == 201, await response.text()
        if request.param == "s3-cached":
            for key in ("data", "big"):
                await warm(client, key)
        head = await client.head("/videos/data")
        yield Served(request.param, client, head.headers["ETag"], head.headers["Last-Modified"])


async def get(served: Served, key: str = "data", method: str = "GET", **headers: str) -> Any:
    response = await served.client.request(method, f"/videos/{key}", headers=headers)
    await response.read()
    return response


def shifted(http_date: str, seconds: int) -> str:
    moment = parsedate_to_datetime(http_date) + timedelta(seconds=seconds)
    return format_datetime(moment, usegmt=True)


async def assert_full(response: Any, body: bytes = BODY) -> None:
    assert response.status == 200
    assert "Content-Range" not in response.headers
    assert response.headers["Content-Length"] == str(len(body))
    assert await response.read() == body


async def assert_partial(response: Any, start: int, stop: int, body: bytes = BODY) -> None:
    assert response.status == 206
    assert response.headers["Content-Range"] == f"bytes {start}-{stop - 1}/{len(body)}"
    assert response.headers["Content-Length"] == str(stop - start)
    assert await response.read() == body[start:stop]


async def assert_416(response: Any, size: int = SIZE) -> None:
    assert response.status == 416
    assert response.headers["Content-Range"] == f"bytes */{size}"
    assert (await response.json())["error"] == "range_not_satisfiable"


async def test_the_serving_path_is_the_one_named(served: Served) -> None:
    # Guards the matrix itself: a cold cache or a cache on plain S3 would test another path.
    expected = "HIT" if served.name == "s3-cached" else None
    assert (await get(served, Range="bytes=0-9")).headers.get("X-Cache") == expected


# ---- Range -----------------------------------------------------------------------


async def test_no_range_is_200_full(served: Served) -> None:
    await assert_full(await get(served))


async def test_first_bytes(served: Served) -> None:
    await assert_partial(await get(served, Range="bytes=0-99"), 0, 100)


async def test_middle_bytes(served: Served) -> None:
    await assert_partial(await get(served, Range="bytes=4000-4999"), 4000, 5000)


async def test_single_last_byte(served: Served) -> None:
    await assert_partial(await get(served, Range=f"bytes={SIZE - 1}-{SIZE - 1}"), SIZE - 1, SIZE)


async def test_open_range(served: Served) -> None:
    await assert_partial(await get(served, Range="bytes=9000-"), 9000, SIZE)


async def test_open_range_from_zero(served: Served) -> None:
    # What ffprobe sends first.
    await assert_partial(await get(served, Range="bytes=0-"), 0, SIZE)


async def test_suffix_range(served: Served) -> None:
    await assert_partial(await get(served, Range="bytes=-100"), SIZE - 100, SIZE)


async def test_suffix_longer_than_the_object_is_the_whole_object(served: Served) -> None:
    await assert_partial(await get(served, Range=f"bytes=-{SIZE * 3}"), 0, SIZE)


async def test_end_past_the_size_clamps(served: Served) -> None:
    await assert_partial(await get(served, Range=f"bytes=9990-{SIZE * 2}"), 9990, SIZE)


async def test_suffix_zero_is_416(served: Served) -> None:
    await assert_416(await get(served, Range="bytes=-0"))


async def test_start_at_the_size_is_416(served: Served) -> None:
    await assert_416(await get(served, Range=f"bytes={SIZE}-"))


async def test_start_past_the_size_is_416(served: Served) -> None:
    await assert_416(await get(served, Range=f"bytes={SIZE + 10}-{SIZE + 20}"))


@pytest.mark.parametrize(
    "header", ["bytes=abc", "bytes=5-1", "items=0-1", "bytes=", "bytes=-", "bytes=1-2-3"]
)
async def test_invalid_range_is_ignored(served: Served, header: str) -> None:
    await assert_full(await get(served, Range=header))


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "bytes=0-0, -1", "bytes=0-99,9000-"])
async def test_multi_range_is_ignored(served: Served, header: str) -> None:
    await assert_full(await get(served, Range=header))


async def test_head_with_range_has_the_range_headers_and_no_body(served: Served) -> None:
    response = await get(served, method="HEAD", Range="bytes=10-19")
    assert (response.status, response.headers["Content-Range"]) == (206, f"bytes 10-19/{SIZE}")
    assert response.headers["Content-Length"] == "10"
    assert await response.read() == b""


async def test_head_with_unsatisfiable_range_is_416(served: Served) -> None:
    response = await get(served, method="HEAD", Range=f"bytes={SIZE}-")
    assert (response.status, response.headers["Content-Range"]) == (416, f"bytes */{SIZE}")


async def test_any_range_of_an_empty_object_is_416(served: Served) -> None:
    await assert_416(await get(served, "empty", Range="bytes=0-"), size=0)


async def test_empty_object_without_range_is_200_empty(served: Served) -> None:
    await assert_full(await get(served, "empty"), b"")


async def test_range_across_a_part_boundary(served: Served) -> None:
    start, stop = PART_SIZE - 10, PART_SIZE + 10
    await assert_partial(
        await get(served, "big", Range=f"bytes={start}-{stop - 1}"), start, stop, BIG
    )


async def test_suffix_of_a_multipart_object(served: Served) -> None:
    response = await get(served, "big", Range="bytes=-1500")
    await assert_partial(response, len(BIG) - 1500, len(BIG), BIG)


async def test_multipart_object_whole(served: Served) -> None:
    await assert_full(await get(served, "big"), BIG)


async def test_ranges_on_one_connection_in_a_row(served: Served) -> None:
    # Keep-alive: each answer must end exactly where its Content-Length says.
    for start in (0, 5000, 100, 9999):
        await assert_partial(await get(served, Range=f"bytes={start}-"), start, SIZE)


# ---- If-Range --------------------------------------------------------------------


async def test_if_range_with_the_etag_gives_206(served: Served) -> None:
    response = await get(served, Range="bytes=0-9", **{"If-Range": served.etag})
    await assert_partial(response, 0, 10)


async def test_if_range_with_another_etag_gives_200_full(served: Served) -> None:
    response = await get(served, Range="bytes=0-9", **{"If-Range": '"not-the-etag"'})
    await assert_full(response)


async def test_if_range_with_a_weak_etag_gives_200_full(served: Served) -> None:
    response = await get(served, Range="bytes=0-9", **{"If-Range": f"W/{served.etag}"})
    await assert_full(response)


async def test_if_range_with_the_last_modified_date_gives_206(served: Served) -> None:
    response = await get(served, Range="bytes=0-9", **{"If-Range": served.last_modified})
    await assert_partial(response, 0, 10)


async def test_if_range_with_an_older_date_gives_200_full(served: Served) -> None:
    older = shifted(served.last_modified, -60)
    await assert_full(await get(served, Range="bytes=0-9", **{"If-Range": older}))


async def test_if_range_not_matching_ignores_an_unsatisfiable_range(served: Served) -> None:
    response = await get(served, Range=f"bytes={SIZE}-", **{"If-Range": '"not-the-etag"'})
    await assert_full(response)


# ---- If-None-Match / If-Modified-Since ------------------------------------------------


async def test_if_none_match_matching_is_304(served: Served) -> None:
    response = await get(served, **{"If-None-Match": served.etag})
    assert response.status == 304
    assert await response.read() == b""


async def test_304_carries_the_validators(served: Served) -> None:
    response = await get(served, **{"If-None-Match": served.etag})
    assert response.headers["ETag"] == served.etag
    assert response.headers["Last-Modified"] == served.last_modified


async def test_if_none_match_star_is_304(served: Served) -> None:
    assert (await get(served, **{"If-None-Match": "*"})).status == 304


async def test_if_none_match_in_a_list_is_304(served: Served) -> None:
    response = await get(served, **{"If-None-Match": f'"a", {served.etag}, "b"'})
    assert response.status == 304


async def test_if_none_match_weak_form_is_304(served: Served) -> None:
    assert (await get(served, **{"If-None-Match": f"W/{served.etag}"})).status == 304


async def test_if_none_match_other_is_200(served: Served) -> None:
    await assert_full(await get(served, **{"If-None-Match": '"not-the-etag"'}))


async def test_if_none_match_matching_wins_over_range(served: Served) -> None:
    response = await get(served, Range="bytes=0-9", **{"If-None-Match": served.etag})
    assert response.status == 304


async def test_head_if_none_match_matching_is_304(served: Served) -> None:
    response = await get(served, method="HEAD", **{"If-None-Match": served.etag})
    assert response.status == 304


async def test_if_modified_since_last_modified_is_304(served: Served) -> None:
    response = await get(served, **{"If-Modified-Since": served.last_modified})
    assert response.status == 304


async def test_if_modified_since_later_is_304(served: Served) -> None:
    later = shifted(served.last_modified, 3600)
    assert (await get(served, **{"If-Modified-Since": later})).status == 304


async def test_if_modified_since_earlier_is_200(served: Served) -> None:
    earlier = shifted(served.last_modified, -3600)
    await assert_full(await get(served, **{"If-Modified-Since": earlier}))


async def test_if_none_match_other_wins_over_if_modified_since(served: Served) -> None:
    headers = {"If-None-Match": '"not-the-etag"', "If-Modified-Since": served.last_modified}
    await assert_full(await get(served, **headers))


# ---- If-Match / If-Unmodified-Since ----------------------------------------------------


async def test_if_match_failing_is_412(served: Served) -> None:
    response = await get(served, **{"If-Match": '"not-the-etag"'})
    assert response.status == 412
    assert (await response.json())["error"] == "precondition_failed"


async def test_if_match_failing_is_412_even_with_a_range(served: Served) -> None:
    response = await get(served, Range="bytes=0-9", **{"If-Match": '"not-the-etag"'})
    assert response.status == 412


async def test_if_match_holding_serves_the_range(served: Served) -> None:
    response = await get(served, Range="bytes=0-9", **{"If-Match": served.etag})
    await assert_partial(response, 0, 10)


async def test_if_match_star_serves(served: Served) -> None:
    await assert_full(await get(served, **{"If-Match": "*"}))


async def test_if_unmodified_since_earlier_is_412(served: Served) -> None:
    earlier = shifted(served.last_modified, -3600)
    assert (await get(served, **{"If-Unmodified-Since": earlier})).status == 412


async def test_if_unmodified_since_last_modified_serves(served: Served) -> None:
    await assert_full(await get(served, **{"If-Unmodified-Since": served.last_modified}))


# ---- the headers do not depend on the path that answered ---------------------------


async def test_range_answer_keeps_the_object_headers(served: Served) -> None:
    response = await get(served, Range="bytes=0-9")
    assert response.headers["ETag"] == served.etag
    assert response.headers["Last-Modified"] == served.last_modified
    assert response.headers["Accept-Ranges"] == "bytes"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


# ---- the /download alias -------------------------------------------------------------


async def test_download_alias_honours_range(served: Served) -> None:
    response = await served.client.get("/download/data", headers={"Range": "bytes=10-19"})
    assert (response.status, await response.read()) == (206, BODY[10:20])


# ---- the first read of a fresh upload (on S3 with the cache: a cold cache) --------------


async def fresh_upload(served: Served, body: bytes) -> str:
    """A key no case has read yet, holding ``body``."""
    key = f"fresh-{uuid.uuid4().hex[:12]}"
    response = await served.client.put(f"/videos/{key}", data=body)
    assert response.status == 201, await response.text()
    return key


@pytest.mark.parametrize(
    ("header", "start", "stop"),
    [("bytes=0-99", 0, 100), ("bytes=-100", 9900, 10000), ("bytes=9000-", 9000, 10000)],
)
async def test_first_read_of_an_upload_honours_range(
    served: Served, header: str, start: int, stop: int
) -> None:
    key = await fresh_upload(served, BODY)
    response = await get(served, key, Range=header)
    assert (response.status, await response.read()) == (206, BODY[start:stop])
    assert response.headers["Content-Range"] == f"bytes {start}-{stop - 1}/{SIZE}"


async def test_first_read_of_an_upload_can_be_416(served: Served) -> None:
    key = await fresh_upload(served, BODY)
    response = await get(served, key, Range=f"bytes={SIZE}-")
    assert (response.status, response.headers["Content-Range"]) == (416, f"bytes */{SIZE}")


async def test_first_read_of_a_multipart_upload_far_into_it(served: Served) -> None:
    # A player seeking ahead before anything else was read.
    key = await fresh_upload(served, BIG)
    start = PART_SIZE + 17
    response = await get(served, key, Range=f"bytes={start}-")
    assert (response.status, await response.read()) == (206, BIG[start:])


# ---- Range syntax: garbage is answered at once, as RFC 9110 allows ----------------------

RANGES = [
    "bytes=" + ",".join(f"{i}-{i}" for i in range(800)),  # many ranges
    "bytes=0-10,5-15",  # overlapping
    "bytes=0-0,-1",
    "bytes=99999999999999999999-",  # 20 digits: past any size
    "bytes=0-99999999999999999999",
    "bytes=-99999999999999999999",
    "bytes=999999999999999999999-",  # 21 digits
    "bytes=18446744073709551616-18446744073709551617",
    "bytes=5000-99999999999999999999",
    "bytes=abc",
    "bytes=5-1",
    "bytes=--1",
    "bytes=-",
    "bytes=0-1-2",
    "bytes 0-1",
    "items=0-1",
    "bytes=\u0661-\u0662",  # Arabic-Indic digits are not DIGIT
    "bytes=\uff11-\uff12",  # nor are full-width ones
    "bytes=0x10-0x20",
    "bytes=1e3-",
    "bytes= 1-2",
    "=",
    "",
]


def expected_answer(header: str, body: bytes) -> tuple[int, bytes | None]:
    """What RFC 9110 allows vidproxy to answer for a single-part Range (our reference)."""
    match = re.fullmatch(r"bytes=([0-9]*)-([0-9]*)", header.strip())
    if not match or not any(match.groups()) or len(max(match.groups(), key=len)) > 20:
        return 200, body
    first, last = match.groups()
    size = len(body)
    if not first:
        return (416, None) if int(last) == 0 else (206, body[max(0, size - int(last)) :])
    if last and int(last) < int(first):
        return 200, body
    if int(first) >= size:
        return 416, None
    stop = size if not last else min(int(last) + 1, size)
    return 206, body[int(first) : stop]


@pytest.mark.parametrize("header", RANGES, ids=range(len(RANGES)))
async def test_range_garbage_answers_200_206_or_416_quickly(served: Served, header: str) -> None:
    started = time.monotonic()
    response = await served.client.get("/videos/data", headers={"Range": header})
    got = await response.read()
    assert time.monotonic() - started < QUICK
    status, expected = expected_answer(header, BODY)
    assert response.status == status, (header, response.status)
    if status == 416:
        assert response.headers["Content-Range"] == f"bytes */{SIZE}"
        assert json.loads(got)["error"] == "range_not_satisfiable"
    else:
        assert got == expected
