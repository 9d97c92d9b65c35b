"""X-Content-SHA256 for every object stored through vidproxy, of any size: on fs
(its metadata file) and on S3, moto and rclone alike (the SHA-256 record that
a multipart upload leaves under ``.vidproxy/sha256/``), cold, cached and after
a restart; a record that no longer matches its object is never believed."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from cache_rig import fetch, wait_for, wait_for_hit
from conftest import PART_SIZE
from fault_rig import (
    S3Faults,
    payload,
    s3_error,
    s3_faults_fixture,  # noqa: F401
)
from rclone_rig import (
    boto3_client,
    new_bucket,
    rclone_endpoint_fixture,  # noqa: F401
)
from rigs.objects import put

from vidproxy.config import Config
from vidproxy.keys import is_reserved
from vidproxy.storage.base import ObjectInfo
from vidproxy.storage.digests import (
    RECORD_PREFIX,
    DigestRecord,
    is_record_path,
    record_key,
    with_recorded_sha256,
)
from vidproxy.units import GiB, MiB

Client = TestClient[Any, Any]
MULTIPART = 17 * MiB  # four parts of the tests' 5 MiB
BIG = 1 * GiB
BIG_PIECE = 1 * MiB
BIG_WAIT = 300.0  # seconds a 1 GiB fill, or its check after a restart, may take
VERIFY_TIMEOUT = 60.0


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---- the record itself ---------------------------------------------------------------


def test_a_record_key_is_reserved_and_short_whatever_the_key() -> None:
    for key in ("a", "dir/clip.mp4", "é" * 512):
        name = record_key(key)
        assert name.startswith(RECORD_PREFIX) and is_reserved(name)
        assert len(name) == len(RECORD_PREFIX) + 64
    assert record_key("a") != record_key("b")


def test_only_requests_for_records_are_taken_for_them() -> None:
    name = record_key("clip.mp4")
    assert is_record_path(f"/videos/{name}", "videos")  # path-style
    assert is_record_path(f"/{name}", "videos")  # virtual-host
    assert not is_record_path(f"/videos/dir/{name}", "videos")  # a user key
    assert not is_record_path("/videos/clip.mp4", "videos")


def test_a_record_reads_back_as_written() -> None:
    record = DigestRecord("k/é.mp4", '"abc-3"', 17, "0" * 64)
    assert DigestRecord.parse(record.to_bytes()) == record


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        b'{"key": "k", "etag": "\\"e\\"", "size": 1}',
        b'{"key": "k", "etag": "\\"e\\"", "size": -1, "sha256": "' + b"0" * 64 + b'"}',
        b'{"key": "k", "etag": "\\"e\\"", "size": true, "sha256": "' + b"0" * 64 + b'"}',
        b'{"key": "k", "etag": "\\"e\\"", "size": 1, "sha256": "' + b"Z" * 64 + b'"}',
    ],
)
def test_what_is_not_a_record_is_none(data: bytes) -> None:
    assert DigestRecord.parse(data) is None


def info(etag: str = '"e-2"', size: int = 10, sha256: str | None = None) -> ObjectInfo:
    from datetime import UTC, datetime

    return ObjectInfo("k", size, etag, datetime.now(UTC), "video/mp4", sha256)


def test_a_record_is_believed_only_for_the_version_it_names() -> None:
    record = DigestRecord("k", '"e-2"', 10, "a" * 64)
    assert with_recorded_sha256(info(), record).sha256 == "a" * 64
    assert with_recorded_sha256(info(etag='"f-2"'), record).sha256 is None
    assert with_recorded_sha256(info(size=11), record).sha256 is None
    other_key = DigestRecord("j", '"e-2"', 10, "a" * 64)
    assert with_recorded_sha256(info(), other_key).sha256 is None
    # A digest the object carries itself wins over any record.
    assert with_recorded_sha256(info(sha256="b" * 64), record).sha256 == "b" * 64


# ---- one rig per backend: fs, moto, rclone ----------------------------------------------


@dataclass
class Rig:
    name: str  # "fs", "moto" or "rclone"
    s3: Any  # boto3 client on the S3 endpoint (None on fs)
    bucket: str
    config: Callable[..., Config]
    start: Callable[[Config], Awaitable[Client]]

    @property
    def on_s3(self) -> bool:
        return self.s3 is not None

    async def vidproxy(self, **sections: dict[str, Any]) -> Client:
        """A vidproxy on this backend; started again, it finds the same data dir,
        cache dir and bucket: a restart."""
        return await self.start(self.config(**sections))

    async def record(self, key: str) -> dict[str, Any] | None:
        """The SHA-256 record of ``key`` as it is in the bucket, if any."""

        def get() -> dict[str, Any] | None:
            try:
                body = self.s3.get_object(Bucket=self.bucket, Key=record_key(key))["Body"]
            except self.s3.exceptions.NoSuchKey:
                return None
            return json.loads(body.read())  # type: ignore[no-any-return]

        return await asyncio.to_thread(get)

    async def put_behind(self, key: str, body: bytes) -> None:
        """Overwrite ``key`` straight in the bucket, not through vidproxy."""
        await asyncio.to_thread(self.s3.put_object, Bucket=self.bucket, Key=key, Body=body)


def make_rig(name: str, request: pytest.FixtureRequest) -> Rig:
    make_config, start = (
        request.getfixturevalue("make_config"),
        request.getfixturevalue("start_vidproxy"),
    )
    if name == "fs":
        return Rig(name, None, "", lambda **sections: make_config("fs", **sections), start)
    if name == "moto":
        s3, bucket = request.getfixturevalue("s3"), request.getfixturevalue("bucket")
        endpoint = request.getfixturevalue("moto_endpoint")
    else:
        endpoint = request.getfixturevalue("rclone_endpoint")
        s3 = boto3_client(endpoint)
        bucket = new_bucket(s3)

    def config(**sections: dict[str, Any]) -> Config:
        s3_section = {"endpoint_url": endpoint, "bucket": bucket, **sections.pop("s3", {})}
        return make_config("s3", s3=s3_section, **sections)  # type: ignore[no-any-return]

    return Rig(name, s3, bucket, config, start)


@pytest.fixture(params=["fs", "moto", "rclone"])
def rig(request: pytest.FixtureRequest) -> Rig:
    return make_rig(str(request.param), request)


@pytest.fixture(params=["moto", "rclone"])
def s3_rig(request: pytest.FixtureRequest) -> Rig:
    return make_rig(str(request.param), request)


async def assert_reports(
    client: Client, key: str, body: bytes, x_cache: str | None, *, ranged: bool = False
) -> None:
    """HEAD and GET (and a Range far into it) answer ``body`` with its SHA-256."""
    if ranged:
        start = len(body) - 1000
        part = await fetch(client, key, Range=f"bytes={start}-")
        assert (part.status, part.body) == (206, body[start:])
        assert part.headers.get("X-Content-SHA256") == sha256(body)
    head = await fetch(client, key, "HEAD")
    got = await fetch(client, key)
    assert (head.status, got.status, got.body == body) == (200, 200, True)
    assert head.headers.get("X-Content-SHA256") == sha256(body)
    assert got.headers.get("X-Content-SHA256") == sha256(body)
    assert (head.x_cache, got.x_cache) == (x_cache, x_cache)


# ---- PUT and POST, cold, cached, after a restart ------------------------------------------


async def test_a_multipart_upload_without_the_header_reports_its_sha256(rig: Rig) -> None:
    body = payload(MULTIPART, 1)
    client = await rig.vidproxy()
    answer = await put(client, "clip.mp4", body)
    assert answer["sha256"] == sha256(body)
    cold = "MISS" if rig.on_s3 else None
    await assert_reports(client, "clip.mp4", body, cold, ranged=True)
    if rig.on_s3:
        await wait_for_hit(client, "clip.mp4")
        await assert_reports(client, "clip.mp4", body, "HIT")
    await client.close()

    restarted = await rig.vidproxy()
    # Entries found at start are read from S3 until they are hashed again, then hit.
    if rig.on_s3:
        await wait_for_hit(restarted, "clip.mp4")
        await assert_reports(restarted, "clip.mp4", body, "HIT")
    else:
        await assert_reports(restarted, "clip.mp4", body, None)


async def test_a_restart_on_an_empty_cache_reads_the_record_again(s3_rig: Rig) -> None:
    body = payload(MULTIPART, 2)
    client = await s3_rig.vidproxy()
    await put(client, "clip.mp4", body)
    await client.close()
    restarted = await s3_rig.vidproxy(cache={"enabled": False})
    await assert_reports(restarted, "clip.mp4", body, None, ranged=True)


async def test_a_post_gets_its_record_too(s3_rig: Rig) -> None:
    body = payload(MULTIPART, 3)
    client = await s3_rig.vidproxy()
    response = await client.post("/videos", data=body)
    assert response.status == 201
    key = (await response.json())["key"]
    await assert_reports(client, key, body, "MISS")
    assert (await s3_rig.record(key)) == {
        "key": key,
        "etag": (await fetch(client, key, "HEAD")).headers["ETag"],
        "size": MULTIPART,
        "sha256": sha256(body),
    }


async def test_a_single_part_upload_needs_no_record(s3_rig: Rig) -> None:
    body = payload(PART_SIZE - 1, 4)
    client = await s3_rig.vidproxy()
    await put(client, "small.mp4", body)
    await assert_reports(client, "small.mp4", body, "MISS")
    assert await s3_rig.record("small.mp4") is None  # its metadata carries the digest


# ---- records that must not be believed ------------------------------------------------------


async def test_an_object_overwritten_behind_vidproxys_back_loses_the_header(s3_rig: Rig) -> None:
    body, other = payload(MULTIPART, 5), payload(MULTIPART, 6)
    client = await s3_rig.vidproxy()
    await put(client, "clip.mp4", body)
    await s3_rig.put_behind("clip.mp4", other)  # same size, other bytes, a new ETag
    assert (await s3_rig.record("clip.mp4") or {}).get("sha256") == sha256(body)

    for method in ("HEAD", "GET"):
        got = await fetch(client, "clip.mp4", method)
        assert got.status == 200
        assert "X-Content-SHA256" not in got.headers
    assert (await fetch(client, "clip.mp4")).body == other


async def test_delete_removes_the_record_and_an_overwrite_replaces_it(s3_rig: Rig) -> None:
    first, second = payload(MULTIPART, 7), payload(MULTIPART + 1, 8)
    client = await s3_rig.vidproxy(cache={"enabled": False})
    await put(client, "clip.mp4", first)
    await put(client, "clip.mp4", second)
    assert (await s3_rig.record("clip.mp4") or {}).get("sha256") == sha256(second)
    await assert_reports(client, "clip.mp4", second, None)

    assert (await client.delete("/videos/clip.mp4")).status == 204
    assert await s3_rig.record("clip.mp4") is None
    # The same bytes written again by something else: no record, no header.
    await s3_rig.put_behind("clip.mp4", second)
    assert "X-Content-SHA256" not in (await fetch(client, "clip.mp4", "HEAD")).headers


@pytest.mark.parametrize(
    "forged",
    [
        pytest.param(lambda r: b"not json", id="not-json"),
        pytest.param(lambda r: json.dumps({**r, "key": "other.mp4"}).encode(), id="other-key"),
        pytest.param(lambda r: json.dumps({**r, "size": r["size"] + 1}).encode(), id="other-size"),
        pytest.param(lambda r: b"{" * (64 * 1024), id="too-large"),
    ],
)
async def test_a_malformed_record_costs_the_header_not_the_answer(
    s3_rig: Rig, forged: Callable[[dict[str, Any]], bytes]
) -> None:
    body = payload(MULTIPART, 9)
    client = await s3_rig.vidproxy(cache={"enabled": False})
    await put(client, "clip.mp4", body)
    record = await s3_rig.record("clip.mp4")
    assert record is not None
    await asyncio.to_thread(
        s3_rig.s3.put_object,
        Bucket=s3_rig.bucket,
        Key=record_key("clip.mp4"),
        Body=forged(record),
    )
    reader = await s3_rig.vidproxy(cache={"enabled": False})  # one that must read the record
    got = await fetch(reader, "clip.mp4")
    assert (got.status, got.body == body) == (200, True)
    assert "X-Content-SHA256" not in got.headers


async def test_a_replica_sees_the_record_another_one_wrote(s3_rig: Rig) -> None:
    first, second = payload(MULTIPART, 14), payload(MULTIPART, 15)
    one = await s3_rig.vidproxy(cache={"enabled": False})
    other = await s3_rig.vidproxy(cache={"enabled": False})
    await put(one, "clip.mp4", first)
    await assert_reports(one, "clip.mp4", first, None)  # known to this process now
    await put(other, "clip.mp4", second)
    await assert_reports(one, "clip.mp4", second, None)
    await assert_reports(other, "clip.mp4", second, None)


async def test_a_digest_this_process_knows_costs_no_record_get(
    make_config: Any, start_vidproxy: Any, s3_faults: S3Faults
) -> None:
    body = payload(MULTIPART, 16)
    config = make_config("s3", s3={"endpoint_url": s3_faults.url}, cache={"enabled": False})
    await put(await start_vidproxy(config), "clip.mp4", body)

    def record_gets() -> int:
        return len(s3_faults.requests(lambda r: r.method == "GET" and RECORD_PREFIX in r.path))

    restarted = await start_vidproxy(config)
    await assert_reports(restarted, "clip.mp4", body, None)
    assert record_gets() == 1  # the HEAD's; the GET after it knew the digest
    await assert_reports(restarted, "clip.mp4", body, None)
    assert record_gets() == 1


async def test_an_object_vidproxy_did_not_write_waits_for_no_record(
    make_config: Any, start_vidproxy: Any, s3_faults: S3Faults, s3: Any, bucket: str
) -> None:
    # Written straight to the bucket, as another tool would: nothing in it says
    # a record follows, so no answer waits for one. Record GETs never answer.
    body = payload(MULTIPART, 17)
    await asyncio.to_thread(s3.put_object, Bucket=bucket, Key="theirs.mp4", Body=body)
    s3_faults.stall = lambda request: RECORD_PREFIX in request.path
    config = make_config("s3", s3={"endpoint_url": s3_faults.url}, cache={"enabled": False})
    client = await start_vidproxy(config)

    for method in ("HEAD", "GET", "GET"):
        got = await asyncio.wait_for(fetch(client, "theirs.mp4", method), 30)
        assert got.status == 200
        assert "X-Content-SHA256" not in got.headers
    assert got.body == body
    # The first read asked for a record beside the object; the next knew this
    # version has none.
    assert len(s3_faults.stalled) == 1


# ---- 1 GiB, streamed both ways ------------------------------------------------------------------


def big_pieces() -> list[bytes]:
    """Sixteen distinct 1 MiB pieces; the body is piece ``n % 16`` for n in 0..1023."""
    return [payload(BIG_PIECE, 100 + n) for n in range(16)]


def big_sha256(pieces: list[bytes]) -> str:
    digest = hashlib.sha256()
    for n in range(BIG // BIG_PIECE):
        digest.update(pieces[n % len(pieces)])
    return digest.hexdigest()


async def stream_big(pieces: list[bytes]) -> AsyncIterator[bytes]:
    for n in range(BIG // BIG_PIECE):
        yield pieces[n % len(pieces)]


async def get_streamed(client: Client, key: str) -> tuple[int, str | None, str | None, str]:
    """GET ``key`` hashing the body as it arrives: status, X-Content-SHA256, X-Cache
    and the hash of what came."""
    digest = hashlib.sha256()
    async with client.get(f"/videos/{key}") as response:
        async for chunk in response.content.iter_chunked(BIG_PIECE):
            digest.update(chunk)
        headers = response.headers
        return (
            response.status,
            headers.get("X-Content-SHA256"),
            headers.get("X-Cache"),
            digest.hexdigest(),
        )


# On rclone alone: the multipart machinery is the same on moto (the 17 MiB cases
# run there), which takes twice as long for 1 GiB and keeps it all in memory.
@pytest.mark.parametrize("s3_rig", ["rclone"], indirect=True)
async def test_a_1_gib_upload_without_the_header_reports_its_sha256(s3_rig: Rig) -> None:
    pieces = big_pieces()
    digest = await asyncio.to_thread(big_sha256, pieces)
    client = await s3_rig.vidproxy()
    response = await client.put("/videos/big.bin", data=stream_big(pieces))
    assert response.status == 201, await response.text()
    assert (await response.json())["sha256"] == digest
    try:
        head = await fetch(client, "big.bin", "HEAD")
        assert head.headers.get("X-Content-SHA256") == digest
        assert await get_streamed(client, "big.bin") == (200, digest, "MISS", digest)
        await wait_for(lambda: is_hit(client), "1 GiB cached", BIG_WAIT)
        assert await get_streamed(client, "big.bin") == (200, digest, "HIT", digest)
        await client.close()

        restarted = await s3_rig.vidproxy()
        await wait_for(lambda: is_hit(restarted), "1 GiB hashed again after a restart", BIG_WAIT)
        head = await fetch(restarted, "big.bin", "HEAD")
        assert head.headers.get("X-Content-SHA256") == digest
        assert await get_streamed(restarted, "big.bin") == (200, digest, "HIT", digest)
        assert (await restarted.delete("/videos/big.bin")).status == 204
        assert await s3_rig.record("big.bin") is None
    finally:
        # moto keeps objects in memory: never leave a GiB behind.
        await asyncio.to_thread(s3_rig.s3.delete_object, Bucket=s3_rig.bucket, Key="big.bin")


async def is_hit(client: Client) -> bool:
    head = await fetch(client, "big.bin", "HEAD")
    return head.x_cache == "HIT"


# ---- a backend that fails the record's requests -----------------------------------------------


def failing_records(method: str) -> Callable[[web.Request], web.StreamResponse | None]:
    def rule(request: web.Request) -> web.StreamResponse | None:
        if request.method == method and "/.vidproxy/sha256/" in request.path:
            return s3_error(500, "InternalError")
        return None

    return rule


async def test_a_record_that_cannot_be_read_costs_the_header_not_the_answer(
    make_config: Any, start_vidproxy: Any, s3_faults: S3Faults
) -> None:
    body = payload(MULTIPART, 10)
    config = make_config("s3", s3={"endpoint_url": s3_faults.url}, cache={"enabled": False})
    client = await start_vidproxy(config)
    await put(client, "clip.mp4", body)
    reader = await start_vidproxy(config)  # one that must read the record
    s3_faults.rule = failing_records("GET")
    for method in ("HEAD", "GET"):
        got = await fetch(reader, "clip.mp4", method)
        assert got.status == 200
        assert "X-Content-SHA256" not in got.headers
    assert (await fetch(reader, "clip.mp4")).body == body
    s3_faults.rule = None
    assert (await fetch(reader, "clip.mp4", "HEAD")).headers["X-Content-SHA256"] == sha256(body)


async def test_a_record_that_cannot_be_written_leaves_the_upload_stored(
    make_config: Any, start_vidproxy: Any, s3_faults: S3Faults, caplog: pytest.LogCaptureFixture
) -> None:
    body = payload(MULTIPART, 11)
    s3_faults.rule = failing_records("PUT")
    client = await start_vidproxy(make_config("s3", s3={"endpoint_url": s3_faults.url}))
    with caplog.at_level(logging.WARNING, logger="vidproxy"):
        answer = await put(client, "clip.mp4", body)
    assert answer["sha256"] == sha256(body)
    assert "could not record its SHA-256" in caplog.text
    got = await fetch(client, "clip.mp4")
    assert (got.status, got.body == body) == (200, True)
    assert "X-Content-SHA256" not in got.headers


# ---- vidproxy verify -----------------------------------------------------------------------------


def run_verify(cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("VIDPROXY_")}
    return subprocess.run(
        [sys.executable, "-m", "vidproxy", "verify", "--no-cache"],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=VERIFY_TIMEOUT,
    )


async def test_verify_checks_multipart_objects_against_their_records(
    s3_rig: Rig, tmp_path: Path
) -> None:
    good, bad = payload(MULTIPART, 12), payload(MULTIPART, 13)
    client = await s3_rig.vidproxy()
    await put(client, "good.mp4", good)
    await put(client, "bad.mp4", bad)
    await client.close()
    record = await s3_rig.record("bad.mp4")
    assert record is not None
    # A record that lies about the bytes, for the version they are: verify must say so.
    lie = {**record, "sha256": sha256(b"other bytes")}
    await asyncio.to_thread(
        s3_rig.s3.put_object,
        Bucket=s3_rig.bucket,
        Key=record_key("bad.mp4"),
        Body=json.dumps(lie).encode(),
    )
    endpoint = s3_rig.s3.meta.endpoint_url
    env = {
        "VIDPROXY_S3_BUCKET": s3_rig.bucket,
        "VIDPROXY_S3_ENDPOINT_URL": endpoint,
        "VIDPROXY_S3_ADDRESSING_STYLE": "path",
    }

    done = await asyncio.to_thread(run_verify, tmp_path, env)

    assert done.returncode == 1, done.stderr
    assert done.stdout.splitlines() == [
        f"object 'bad.mp4': its bytes have sha256 {sha256(bad)}, "
        f"sha256 {sha256(b'other bytes')} recorded",
        f"checked 2 objects ({2 * MULTIPART} bytes) and 0 cache entries (0 bytes); "
        "0 without a recorded digest (size only); 1 damaged",
    ]


# ---- listing ----------------------------------------------------------------------------------


async def test_a_listing_is_not_cut_short_by_the_records(s3_rig: Rig) -> None:
    """Records sort before most keys ("." < digits and letters): a page that runs
    into them is filled from past them."""
    # ".vidproxy.mp4" sorts just before the records (".vidproxy/...").
    user_keys = ["-first.mp4", ".vidproxy.mp4", "01J0.mp4", "b.mp4", "c.mp4"]
    records = [record_key(f"r{n}") for n in range(5)]
    for name in [*user_keys, *records]:
        await s3_rig.put_behind(name, b"x")
    client = await s3_rig.vidproxy()
    seen, after = [], ""
    for _ in range(len(user_keys)):
        response = await client.get("/videos", params={"limit": "2", "after": after})
        page = await response.json()
        assert len(page["items"]) == 2 or page["next_after"] is None
        seen += [item["key"] for item in page["items"]]
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert seen == user_keys
    # A cursor at the prefix's bare name (reserved too) does not skip what follows it.
    response = await client.get("/videos", params={"limit": "2", "after": ".vidproxy"})
    assert [item["key"] for item in (await response.json())["items"]] == user_keys[1:3]
