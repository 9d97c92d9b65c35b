"""Cold (S3, through a fill) and warm (disk) answers are the same, header for header.

Every Range and conditional case runs twice on the same object version: cold,
on a vidproxy with an empty cache of its own (so it takes the miss path: a
fill, or a direct ranged GET for a range far ahead of it), and warm, on a
vidproxy that has the object on disk. Status, ``Content-Range``, validators,
``Content-Type`` and bytes must match; ``X-Cache`` says which path answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from cache_rig import (
    CacheRig,
    Fetched,
    cache_rig_fixture,  # noqa: F401
    fetch,
    random_bytes,
    wait_for_hit,
)
from s3_proxy import s3_proxy_fixture  # noqa: F401

from vidproxy.cache.readers import READAHEAD
from vidproxy.units import MiB

KEY = "matrix.mp4"
# Small: every cold range follows the fill. Large: a range deep into it is
# fetched from S3 directly while the fill starts.
SIZES = {"1MiB": 1 * MiB + 7, "12MiB": 12 * MiB + 7}
CASES_AT_ONCE = 8
DEEP = 100_000  # "deep into the object": this many bytes before its end
COMPARED = (
    "Content-Range",
    "Content-Length",
    "Content-Type",
    "ETag",
    "Last-Modified",
    "Accept-Ranges",
    "X-Content-Type-Options",
    "X-Content-SHA256",
)


@dataclass(frozen=True)
class Case:
    name: str
    status: int  # what RFC 9110 and docs/api.md's table call for
    headers: Mapping[str, str]  # templates: {etag}, {last_modified}, {future}, {size}, ...
    method: str = "GET"


MATRIX = [
    Case("no Range", 200, {}),
    Case("first 100 bytes", 206, {"Range": "bytes=0-99"}),
    Case("open from 100", 206, {"Range": "bytes=100-"}),
    Case("last 100 bytes", 206, {"Range": "bytes=-100"}),
    Case("open, deep into the object", 206, {"Range": "bytes={deep}-"}),
    Case("closed, deep into the object", 206, {"Range": "bytes={deep}-{deep_end}"}),
    Case("suffix of zero", 416, {"Range": "bytes=-0"}),
    Case("start at the size", 416, {"Range": "bytes={size}-"}),
    Case("start past the size", 416, {"Range": "bytes={past}-{far_past}"}),
    Case("end past the size is clamped", 206, {"Range": "bytes={near_end}-{far_past}"}),
    Case("multi-range is ignored", 200, {"Range": "bytes=0-1,5-6"}),
    Case("garbage Range is ignored", 200, {"Range": "bytes=abc"}),
    Case("another unit is ignored", 200, {"Range": "items=0-5"}),
    Case("reversed Range is ignored", 200, {"Range": "bytes=9-3"}),
    Case("If-None-Match matching", 304, {"If-None-Match": "{etag}"}),
    Case("If-None-Match other", 200, {"If-None-Match": '"other"'}),
    Case(
        "If-None-Match matching with a Range",
        304,
        {"If-None-Match": "{etag}", "Range": "bytes=0-9"},
    ),
    Case("If-Modified-Since in the future", 304, {"If-Modified-Since": "{future}"}),
    Case("If-Modified-Since in the past", 200, {"If-Modified-Since": "{past_date}"}),
    Case("If-Match other", 412, {"If-Match": '"other"'}),
    Case("If-Match other with a Range", 412, {"If-Match": '"other"', "Range": "bytes=0-9"}),
    Case("If-Match matching with a Range", 206, {"If-Match": "{etag}", "Range": "bytes=0-9"}),
    Case("If-Unmodified-Since in the past", 412, {"If-Unmodified-Since": "{past_date}"}),
    Case("If-Range ETag matching", 206, {"If-Range": "{etag}", "Range": "bytes=0-99"}),
    Case("If-Range ETag other", 200, {"If-Range": '"other"', "Range": "bytes=0-99"}),
    Case("If-Range weak ETag", 200, {"If-Range": "W/{etag}", "Range": "bytes=0-99"}),
    Case("If-Range date matching", 206, {"If-Range": "{last_modified}", "Range": "bytes=0-99"}),
    Case(
        "If-Range other, Range unsatisfiable",
        200,
        {"If-Range": '"other"', "Range": "bytes={size}-"},
    ),
    Case("HEAD", 200, {}, "HEAD"),
    Case("HEAD first 100 bytes", 206, {"Range": "bytes=0-99"}, "HEAD"),
    Case("HEAD last 100 bytes", 206, {"Range": "bytes=-100"}, "HEAD"),
    Case("HEAD deep into the object", 206, {"Range": "bytes={deep}-"}, "HEAD"),
    Case("HEAD start at the size", 416, {"Range": "bytes={size}-"}, "HEAD"),
    Case("HEAD multi-range", 200, {"Range": "bytes=0-1,5-6"}, "HEAD"),
    Case("HEAD If-None-Match matching", 304, {"If-None-Match": "{etag}"}, "HEAD"),
    Case("HEAD If-Match other", 412, {"If-Match": '"other"'}, "HEAD"),
    Case("HEAD If-Range other", 200, {"If-Range": '"other"', "Range": "bytes=0-99"}, "HEAD"),
]


def fill_in(case: Case, validators: Mapping[str, str], size: int) -> dict[str, str]:
    last_modified = parsedate_to_datetime(validators["Last-Modified"])
    values = {
        "etag": validators["ETag"],
        "last_modified": validators["Last-Modified"],
        "future": format_datetime(last_modified + timedelta(hours=1), usegmt=True),
        "past_date": format_datetime(last_modified - timedelta(hours=1), usegmt=True),
        "size": size,
        "past": size + 10,
        "far_past": size * 2,
        "near_end": size - 50,
        "deep": size - DEEP,
        "deep_end": size - DEEP // 2 - 1,
    }
    return {name: value.format(**values) for name, value in case.headers.items()}


def seen(answer: Fetched) -> dict[str, Any]:
    """What a client can tell apart, besides which path answered."""
    picked: dict[str, Any] = {name: answer.headers.get(name) for name in COMPARED}
    return {"status": answer.status, **picked, "body": answer.body}


def expected_body(answer: Fetched, body: bytes, method: str) -> bytes:
    if method == "HEAD" or answer.status not in (200, 206):
        return answer.body  # not what this test checks
    if answer.status == 200:
        return body
    first, last = answer.headers["Content-Range"].removeprefix("bytes ").split("/")[0].split("-")
    return body[int(first) : int(last) + 1]


def describe(cold: dict[str, Any], warm: dict[str, Any]) -> str:
    differ = [name for name in cold if cold[name] != warm[name]]
    return ", ".join(
        f"{name}: cold {_short(cold[name])} / warm {_short(warm[name])}" for name in differ
    )


def _short(value: Any) -> Any:
    return f"<{len(value)} bytes>" if isinstance(value, bytes) else value


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
async def test_cold_and_warm_answer_the_whole_matrix_alike(cache_rig: CacheRig, size: int) -> None:
    body = random_bytes(size, size)
    await cache_rig.upload(KEY, body)
    client = await cache_rig.start()
    limiter = asyncio.Semaphore(CASES_AT_ONCE)

    async def check(number: int, case: Case) -> list[str]:
        async with limiter:
            return await check_case(cache_rig, client, f"case-{number}.mp4", case, body)

    found = await asyncio.gather(*(check(n, case) for n, case in enumerate(MATRIX)))

    assert [problem for problems in found for problem in problems] == []
    # The cold answers took the paths they are meant to: a range deep into the
    # large object went to S3 directly, on the small one it followed the fill.
    deep = [n for n, case in enumerate(MATRIX) if "{deep}" in case.headers.get("Range", "")]
    direct = any(cache_rig.ranged_gets(f"case-{n}.mp4") for n in deep)
    assert direct == (size - DEEP > READAHEAD)


async def check_case(
    rig: CacheRig, client: TestClient[Any, Any], key: str, case: Case, body: bytes
) -> list[str]:
    """Ask ``case`` of ``key`` cold, then warm; what differs, or is wrong."""
    # A key of its own, never read: the first request takes the cold path.
    validators = await copy_object(rig, KEY, key)
    headers = fill_in(case, validators, len(body))
    cold = await fetch(client, key, case.method, **headers)
    await fetch(client, key, Range="bytes=0-0")  # starts a fill, or joins it
    await wait_for_hit(client, key)
    warm = await fetch(client, key, case.method, **headers)
    await asyncio.to_thread(rig.s3.delete_object, Bucket=rig.bucket, Key=key)

    problems = []
    if warm.body != expected_body(warm, body, case.method):
        problems.append(f"{case.name}: the warm answer has the wrong bytes")
    if (cold.status, warm.status) != (case.status, case.status):
        problems.append(
            f"{case.name}: status cold {cold.status} / warm {warm.status}, expected {case.status}"
        )
    elif seen(cold) != seen(warm):
        problems.append(f"{case.name}: {describe(seen(cold), seen(warm))}")
    if case.status < 400 and (cold.x_cache, warm.x_cache) != ("MISS", "HIT"):
        problems.append(f"{case.name}: X-Cache cold {cold.x_cache} / warm {warm.x_cache}")
    return problems


async def copy_object(rig: CacheRig, source: str, key: str) -> dict[str, str]:
    """Copy ``source`` to ``key`` inside S3; returns the copy's ETag and Last-Modified."""

    def copy() -> dict[str, str]:
        rig.s3.copy_object(
            Bucket=rig.bucket, Key=key, CopySource={"Bucket": rig.bucket, "Key": source}
        )
        head = rig.s3.head_object(Bucket=rig.bucket, Key=key)
        return {
            "ETag": head["ETag"],
            "Last-Modified": format_datetime(head["LastModified"].astimezone(UTC), usegmt=True),
        }

    return await asyncio.to_thread(copy)
