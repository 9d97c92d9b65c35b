"""Faults on either side of vidproxy, each test ending with "nothing lost".

S3 dies and comes back through ``TcpFault`` (moto behind it keeps its state, so
"back" sees the same bucket); S3 answers errors through ``S3Faults``; S3 bodies
are held or cut mid-way through ``s3_proxy``. Clients die by closing sockets.

The sweeper tests here block ListMultipartUploads until the moment they want
a sweep to act; tests/test_sweeper.py has the sweeper's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import PART_SIZE, Connect, chunked
from fault_rig import (
    MakeTcpFault,
    S3Faults,
    is_complete,
    is_list_uploads,
    is_put_object,
    is_upload_part,
    object_bytes,
    payload,
    s3_error,
    s3_faults_fixture,  # noqa: F401
    tcp_fault_fixture,  # noqa: F401
)
from rigs.objects import nothing_pending, put, stored
from s3_proxy import (
    S3Proxy,
    s3_proxy_fixture,  # noqa: F401
)

from vidproxy.config import Config
from vidproxy.storage.sweeper import abort_stale_uploads

Client = TestClient[Any, Any]
Pending = Callable[[], Awaitable[list[str]]]
Wait = Callable[..., Awaitable[None]]
Start = Callable[..., Awaitable[Client]]
MakeConfig = Callable[..., Config]

KEY = "clip.mp4"
OLD = payload(3000, 1)
MULTIPART = 2 * PART_SIZE + 1000
BIG = 8 * 1024 * 1024  # a download that is still running when the fault strikes
HOLD_AT = 1024 * 1024
RECOVERY = 10.0  # seconds for vidproxy to notice S3 is back
CUT = (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=15)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def in_s3(s3: Any, bucket: str, key: str = KEY) -> bytes | None:
    return await asyncio.to_thread(object_bytes, s3, bucket, key)


async def uploads_in_s3(s3: Any, bucket: str) -> list[str]:
    response = await asyncio.to_thread(s3.list_multipart_uploads, Bucket=bucket)
    return [u["Key"] for u in response.get("Uploads", [])]


async def assert_cut(client: Client, key: str) -> bytes:
    """GET ``key`` and expect a 200 whose body breaks off; returns what arrived."""
    received = b""
    with pytest.raises(CUT):
        async with client.get(f"/videos/{key}", timeout=REQUEST_TIMEOUT) as response:
            assert response.status == 200
            assert int(response.headers["Content-Length"]) == BIG
            async for chunk in response.content.iter_any():
                received += chunk
    assert len(received) < BIG
    return received


def cache_temps(tmp_path: Path) -> list[str]:
    tmp = tmp_path / "cache" / "tmp"
    return sorted(p.name for p in tmp.iterdir()) if tmp.is_dir() else []


# ---- S3 unreachable at start ------------------------------------------------------------


@pytest.mark.parametrize("backend", ["s3"])
async def test_s3_unreachable_at_start_is_503_until_it_comes_back(
    make_config: MakeConfig,
    start_vidproxy: Start,
    tcp_fault: MakeTcpFault,
    moto_endpoint: str,
    s3: Any,
    bucket: str,
    wait_until: Wait,
    pending_uploads: Pending,
) -> None:
    s3.put_object(Bucket=bucket, Key=KEY, Body=OLD)
    dead = await tcp_fault(moto_endpoint, listening=False)
    client = await start_vidproxy(make_config("s3", s3={"endpoint_url": dead.url}))
    assert (await client.get("/healthz")).status == 200
    attempts = [
        ("GET", "/readyz", None),
        ("GET", f"/videos/{KEY}", None),
        ("HEAD", f"/videos/{KEY}", None),
        ("GET", "/videos", None),
        ("PUT", "/videos/new", b"small"),
        ("PUT", "/videos/new", payload(MULTIPART)),
        ("POST", "/videos", b"small"),
        ("DELETE", f"/videos/{KEY}", None),
    ]
    for method, path, body in attempts:
        response = await client.request(method, path, data=body)
        assert response.status == 503, (method, path)
        assert int(response.headers["Retry-After"]) > 0
        if method != "HEAD":
            assert (await response.json())["error"] == "upstream_unavailable"
    await dead.revive()

    async def ready() -> bool:
        return (await client.get("/readyz")).status == 200

    await wait_until(ready, "/readyz once S3 is back", RECOVERY)
    assert await stored(client, KEY) == OLD  # the DELETE tried while S3 was away did nothing
    await put(client, "new", b"after")
    assert await in_s3(s3, bucket, "new") == b"after"
    await nothing_pending(pending_uploads, RECOVERY)


async def test_bucket_to_create_is_created_once_s3_comes_back(
    make_config: MakeConfig,
    start_vidproxy: Start,
    tcp_fault: MakeTcpFault,
    moto_endpoint: str,
    s3: Any,
    wait_until: Wait,
) -> None:
    # Compose-style start: vidproxy is up before S3, and is told to create its bucket.
    name = f"late-{uuid.uuid4().hex[:12]}"
    dead = await tcp_fault(moto_endpoint, listening=False)
    s3_settings = {"endpoint_url": dead.url, "bucket": name, "create_bucket": True}
    client = await start_vidproxy(make_config("s3", s3=s3_settings))
    assert (await client.get("/readyz")).status == 503
    await dead.revive()

    async def ready() -> bool:
        return (await client.get("/readyz")).status == 200

    await wait_until(ready, "/readyz once S3 is back", RECOVERY)
    await put(client, KEY, OLD)
    assert await in_s3(s3, name) == OLD


# ---- S3 killed mid-upload; the sweeper ------------------------------------------------------


@pytest.fixture
def sweeps(s3_faults: S3Faults) -> dict[str, bool]:
    """ListMultipartUploads answers 503 while ``blocked``: no sweep can act."""
    state = {"blocked": True}

    def rule(request: web.Request) -> web.StreamResponse | None:
        if state["blocked"] and is_list_uploads(request):
            return s3_error(503, "SlowDown")
        return None

    s3_faults.rule = rule
    return state


@pytest.mark.parametrize("backend", ["s3"])
@pytest.mark.parametrize("framing", ["Content-Length", "chunked"])
async def test_s3_killed_mid_upload_keeps_the_old_object_and_the_orphan_is_swept(
    make_config: MakeConfig,
    start_vidproxy: Start,
    raw_connect: Connect,
    tcp_fault: MakeTcpFault,
    s3_faults: S3Faults,
    sweeps: dict[str, bool],
    s3: Any,
    bucket: str,
    wait_until: Wait,
    pending_uploads: Pending,
    framing: str,
) -> None:
    s3.put_object(Bucket=bucket, Key=KEY, Body=OLD)
    link = await tcp_fault(s3_faults.url)
    config = make_config("s3", s3={"endpoint_url": link.url, "abort_stale_uploads_after": 1})
    client = await start_vidproxy(config)
    body = payload(MULTIPART, 2)
    connection = await raw_connect(client)
    if framing == "chunked":
        await connection.send_head("PUT", f"/videos/{KEY}", {"Transfer-Encoding": "chunked"})
        wire = chunked(body)
    else:
        await connection.send_head("PUT", f"/videos/{KEY}", {"Content-Length": str(MULTIPART)})
        wire = body
    first = PART_SIZE + 70_000
    await connection.send(wire[:first])

    async def begun() -> bool:
        return await pending_uploads() == [KEY]

    await wait_until(begun, "the multipart upload to begin")
    await link.kill()
    with contextlib.suppress(ConnectionError):
        await connection.send(wire[first:])
    response = await connection.response()
    assert response.status in (502, 503)
    assert response.json()["error"] in ("upstream_error", "upstream_unavailable")
    # vidproxy's own abort could not reach S3: the parts are still there, the old
    # object is untouched, and nothing under the key changed.
    assert await uploads_in_s3(s3, bucket) == [KEY]
    assert await in_s3(s3, bucket) == OLD
    await link.revive()
    sweeps["blocked"] = False
    await nothing_pending(pending_uploads, RECOVERY)
    assert await stored(client, KEY) == OLD


@pytest.mark.parametrize("backend", ["s3"])
async def test_orphaned_uploads_are_aborted_once_idle_for_the_limit(
    make_config: MakeConfig,
    start_vidproxy: Start,
    s3: Any,
    bucket: str,
    wait_until: Wait,
    pending_uploads: Pending,
) -> None:
    # Left by a process that died mid-upload; their last part is their last activity.
    for key in ("crashed/a.mp4", "crashed/b.mp4"):
        upload = s3.create_multipart_upload(Bucket=bucket, Key=key)
        s3.upload_part(
            Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"x" * 100
        )
    config = make_config("s3", s3={"abort_stale_uploads_after": 1})
    await start_vidproxy(config)
    await nothing_pending(pending_uploads, RECOVERY)


class FakeUploads:
    """Just enough of an S3 client for ``abort_stale_uploads``: two listing pages."""

    def __init__(self, now: datetime) -> None:
        ages = {"old-1": 7200, "young": 60, "old-2": 3601, "just-young": 3599}
        self.uploads = [
            {"Key": key, "UploadId": f"id-{key}", "Initiated": now - timedelta(seconds=age)}
            for key, age in ages.items()
        ]
        self.aborted: list[str] = []
        self.markers: list[tuple[str, str]] = []

    async def list_multipart_uploads(self, **params: Any) -> dict[str, Any]:
        self.markers.append((params.get("KeyMarker", ""), params.get("UploadIdMarker", "")))
        if "KeyMarker" not in params:
            return {
                "Uploads": self.uploads[:2],
                "IsTruncated": True,
                "NextKeyMarker": "young",
                "NextUploadIdMarker": "id-young",
            }
        return {"Uploads": self.uploads[2:], "IsTruncated": False}

    async def list_parts(self, **params: Any) -> dict[str, Any]:
        # One part, as old as the upload: its last activity is its start.
        (upload,) = (u for u in self.uploads if u["UploadId"] == params["UploadId"])
        return {"Parts": [{"PartNumber": 1, "LastModified": upload["Initiated"]}]}

    async def abort_multipart_upload(self, **params: Any) -> None:
        self.aborted.append(params["Key"])


@contextlib.asynccontextmanager
async def no_mapping(operation: str) -> AsyncIterator[None]:
    yield


async def test_the_sweep_aborts_only_uploads_older_than_the_limit() -> None:
    client = FakeUploads(datetime.now(UTC))
    aborted = await abort_stale_uploads(client, "bucket", 3600, no_mapping)
    assert (aborted, client.aborted) == (2, ["old-1", "old-2"])
    assert client.markers == [("", ""), ("young", "id-young")]


# ---- S3 killed, truncating or stalling mid-download ---------------------------------------


@pytest.mark.parametrize("cache", [True, False], ids=["cache", "no-cache"])
async def test_s3_killed_mid_download_cuts_the_client_and_leaves_no_temp_file(
    make_config: MakeConfig,
    start_vidproxy: Start,
    tcp_fault: MakeTcpFault,
    s3_proxy: S3Proxy,
    s3: Any,
    bucket: str,
    tmp_path: Path,
    wait_until: Wait,
    cache: bool,
) -> None:
    body = payload(BIG, 3)
    s3.put_object(Bucket=bucket, Key="big", Body=body)
    hold = s3_proxy.hold(bucket, "big", after=HOLD_AT)
    link = await tcp_fault(s3_proxy.url)
    config = make_config("s3", s3={"endpoint_url": link.url}, cache={"enabled": cache})
    client = await start_vidproxy(config)
    download = asyncio.create_task(assert_cut(client, "big"))
    await hold.wait_reached()
    await link.kill()
    received = await asyncio.wait_for(download, 15)
    assert body.startswith(received)
    hold.release()

    async def no_temp() -> bool:
        return cache_temps(tmp_path) == []

    await wait_until(no_temp, "the cache fill's temp file to go")
    await link.revive()
    assert await stored(client, "big") == body
    assert await in_s3(s3, bucket, "big") == body


@pytest.mark.parametrize("fault", ["truncated", "stalled"])
async def test_s3_body_cut_or_stalled_cuts_the_client_and_leaks_no_connection(
    make_config: MakeConfig,
    start_vidproxy: Start,
    s3_proxy: S3Proxy,
    s3: Any,
    bucket: str,
    fault: str,
) -> None:
    body, small = payload(BIG, 4), payload(100_000, 5)
    s3.put_object(Bucket=bucket, Key="big", Body=body)
    s3.put_object(Bucket=bucket, Key="small", Body=small)
    # One pooled connection: a single one left checked out would hang every GET after.
    settings = {"endpoint_url": s3_proxy.url, "max_pool_connections": 1, "read_timeout": 1}
    client = await start_vidproxy(make_config("s3", s3=settings, cache={"enabled": False}))
    for _ in range(2):
        hold = s3_proxy.hold(bucket, "big", after=HOLD_AT, cut=fault == "truncated")
        received = await asyncio.wait_for(assert_cut(client, "big"), 15)
        assert body.startswith(received)
        hold.release()
    answers = await asyncio.wait_for(
        asyncio.gather(*(stored(client, "small") for _ in range(20))), 30
    )
    assert all(answer == small for answer in answers)


# ---- clients that go away ---------------------------------------------------------------


async def test_client_gone_mid_chunked_upload_keeps_the_old_object(
    client: Client, raw_connect: Connect, pending_uploads: Pending, wait_until: Wait
) -> None:
    # test_body covers Content-Length bodies; a chunked one is cut inside a chunk.
    await put(client, KEY, OLD)
    connection = await raw_connect(client)
    await connection.send_head("PUT", f"/videos/{KEY}", {"Transfer-Encoding": "chunked"})
    await connection.send(chunked(payload(MULTIPART))[: PART_SIZE + 100_000])

    async def under_way() -> bool:
        return await pending_uploads() != []

    await wait_until(under_way, "the upload to be under way")
    await connection.close()
    await nothing_pending(pending_uploads, RECOVERY)
    assert await stored(client, KEY) == OLD


@pytest.mark.parametrize("backend", ["fs"])
async def test_client_gone_mid_download_releases_the_old_version(
    client: Client, tmp_path: Path, wait_until: Wait
) -> None:
    old = payload(4 * BIG, 5)
    await put(client, KEY, old)
    response = await client.get(f"/videos/{KEY}")
    assert len(await response.content.read(64 * 1024)) > 0
    response.close()  # the connection goes with it
    await put(client, KEY, b"new")
    objects = tmp_path / "data" / "objects"

    async def only_the_new_version() -> bool:
        files = [p for p in objects.rglob("*") if p.is_file()]
        return sorted(p.suffix == ".json" for p in files) == [False, True]

    await wait_until(only_the_new_version, "the old version's file to go")
    assert await stored(client, KEY) == b"new"


async def test_client_gone_mid_download_gives_the_s3_connection_back(
    make_config: MakeConfig, start_vidproxy: Start, s3: Any, bucket: str
) -> None:
    body, small = payload(BIG, 6), payload(100_000, 5)
    s3.put_object(Bucket=bucket, Key="big", Body=body)
    s3.put_object(Bucket=bucket, Key="small", Body=small)
    settings = {"max_pool_connections": 1}
    client = await start_vidproxy(make_config("s3", s3=settings, cache={"enabled": False}))
    for _ in range(3):
        response = await client.get("/videos/big")
        await response.content.read(64 * 1024)
        response.close()
    answers = await asyncio.wait_for(
        asyncio.gather(*(stored(client, "small") for _ in range(20))), 30
    )
    assert all(answer == small for answer in answers)


# ---- overwrites and concurrent writes ---------------------------------------------------------


@pytest.fixture(params=["fs", "s3-cache", "s3-no-cache"])
async def any_store(
    request: pytest.FixtureRequest, make_config: MakeConfig, start_vidproxy: Start
) -> Client:
    backend, _, cache = request.param.partition("-")
    config = make_config(backend, cache={"enabled": cache != "no-cache"})
    return await start_vidproxy(config)


async def test_overwrite_during_a_download_gives_the_reader_the_whole_old_version(
    any_store: Client,
) -> None:
    old, new = payload(BIG, 7), payload(BIG - 3, 8)
    await put(any_store, KEY, old)
    async with any_store.get(f"/videos/{KEY}", timeout=REQUEST_TIMEOUT) as response:
        first = await response.content.readexactly(64 * 1024)
        await put(any_store, KEY, new)
        rest = await response.read()
    assert first + rest == old
    assert await stored(any_store, KEY) == new


async def test_concurrent_multipart_puts_leave_exactly_one_whole_body(
    client: Client, pending_uploads: Pending, wait_until: Wait
) -> None:
    bodies = [payload(MULTIPART, 10), payload(MULTIPART + 7, 11)]

    async def pieces(body: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(body), 256 * 1024):
            yield body[start : start + 256 * 1024]

    answers = await asyncio.gather(
        client.put(f"/videos/{KEY}", data=bodies[0]),
        client.put(f"/videos/{KEY}", data=pieces(bodies[1])),
    )
    assert [a.status for a in answers] == [201, 201]
    result = await stored(client, KEY)
    assert result in bodies
    head = await client.head(f"/videos/{KEY}")
    assert head.headers.get("X-Content-SHA256") in (None, sha256(result or b""))
    await nothing_pending(pending_uploads, RECOVERY)


async def test_create_only_put_on_an_existing_key_is_412_and_keeps_it(
    client: Client, pending_uploads: Pending, wait_until: Wait
) -> None:
    # Refused before the body is read (the commit-time refusal is staged below).
    await put(client, KEY, OLD)
    response = await client.put(f"/videos/{KEY}", data=b"new", headers={"If-None-Match": "*"})
    assert (response.status, (await response.json())["error"]) == (412, "precondition_failed")
    assert await stored(client, KEY) == OLD
    await nothing_pending(pending_uploads, RECOVERY)


async def test_create_only_put_of_a_new_key_is_stored(client: Client) -> None:
    await put(client, "fresh", payload(MULTIPART, 12), **{"If-None-Match": "*"})
    assert await stored(client, "fresh") == payload(MULTIPART, 12)


@pytest.mark.parametrize("backend", ["fs"])
@pytest.mark.parametrize("value", ['"abc"', "W/*", "*, *", ""])
async def test_if_none_match_other_than_star_on_a_write_is_400(client: Client, value: str) -> None:
    response = await client.put(f"/videos/{KEY}", data=b"x", headers={"If-None-Match": value})
    assert (response.status, (await response.json())["error"]) == (400, "invalid_precondition")


@pytest.mark.parametrize("backend", ["fs"])
async def test_concurrent_create_only_puts_let_exactly_one_win(
    client: Client, pending_uploads: Pending, wait_until: Wait
) -> None:
    # Two writers on fs; tests/test_create_only.py races eight on every backend.
    bodies = [payload(MULTIPART, 13), payload(MULTIPART, 14)]
    answers = await asyncio.gather(
        *(
            client.put(f"/videos/{KEY}", data=body, headers={"If-None-Match": "*"})
            for body in bodies
        )
    )
    statuses = [a.status for a in answers]
    assert sorted(statuses) == [201, 412]
    assert await stored(client, KEY) == bodies[statuses.index(201)]
    await nothing_pending(pending_uploads, RECOVERY)


async def test_create_only_put_overtaken_mid_upload_is_412(
    client: Client, raw_connect: Connect, pending_uploads: Pending, wait_until: Wait
) -> None:
    # Both writers pass the early existence check; the first to finish wins, and
    # the slower one learns only at its commit (S3: If-None-Match on Complete).
    slow, fast = payload(MULTIPART, 13), payload(MULTIPART, 14)
    connection = await raw_connect(client)
    head = {"Content-Length": str(MULTIPART), "If-None-Match": "*"}
    await connection.send_head("PUT", f"/videos/{KEY}", head)
    await connection.send(slow[: PART_SIZE + 1000])

    async def under_way() -> bool:
        return len(await pending_uploads()) == 1

    await wait_until(under_way, "the slow create-only upload to be under way")
    await put(client, KEY, fast, **{"If-None-Match": "*"})
    await connection.send(slow[PART_SIZE + 1000 :])
    response = await connection.response()
    assert (response.status, response.json()["error"]) == (412, "precondition_failed")
    assert await stored(client, KEY) == fast
    await nothing_pending(pending_uploads, RECOVERY)


@pytest.mark.parametrize("backend", ["s3"])
@pytest.mark.parametrize("size", [3000, MULTIPART], ids=["PutObject", "Complete"])
async def test_create_only_is_s3s_conditional_write_when_another_writer_wins(
    make_config: MakeConfig,
    start_vidproxy: Start,
    s3_faults: S3Faults,
    s3: Any,
    bucket: str,
    pending_uploads: Pending,
    wait_until: Wait,
    size: int,
) -> None:
    # Another writer stores the key after vidproxy's early HEAD found it free, just
    # before vidproxy's own write: only S3's If-None-Match can refuse ours now.
    racer = payload(500, 15)

    def rule(request: web.Request) -> web.StreamResponse | None:
        if (is_put_object(request) or is_complete(request)) and request.path.endswith(KEY):
            s3.put_object(Bucket=bucket, Key=KEY, Body=racer)
        return None

    s3_faults.rule = rule
    client = await start_vidproxy(make_config("s3", s3={"endpoint_url": s3_faults.url}))
    response = await client.put(
        f"/videos/{KEY}", data=payload(size), headers={"If-None-Match": "*"}
    )
    assert response.status == 412
    writes = s3_faults.requests(
        lambda r: r.method in ("PUT", "POST") and "partNumber" not in r.query
    )
    last = writes[-1]
    assert last.headers.get("If-None-Match") == "*"
    assert last.answered == 412
    assert await in_s3(s3, bucket) == racer
    await nothing_pending(pending_uploads, RECOVERY)


# ---- a part that fails once is retried ------------------------------------------------------


@pytest.mark.parametrize("backend", ["s3"])
@pytest.mark.parametrize(("status", "code"), [(500, "InternalError"), (503, "SlowDown")])
async def test_one_upload_part_failing_once_is_retried_and_the_upload_succeeds(
    make_config: MakeConfig,
    start_vidproxy: Start,
    s3_faults: S3Faults,
    s3: Any,
    bucket: str,
    pending_uploads: Pending,
    wait_until: Wait,
    status: int,
    code: str,
) -> None:
    failures = {"left": 1}

    def fail_part_2_once(request: web.Request) -> web.StreamResponse | None:
        if is_upload_part(request, 2) and failures["left"]:
            failures["left"] -= 1
            return s3_error(status, code)
        return None

    s3_faults.rule = fail_part_2_once
    # max_attempts=3 is the shipped default; the test config otherwise turns retries off.
    settings = {"endpoint_url": s3_faults.url, "max_attempts": 3}
    client = await start_vidproxy(make_config("s3", s3=settings))
    body = payload(MULTIPART, 16)
    await put(client, KEY, body)
    tries = s3_faults.requests(lambda r: r.query.get("partNumber") == "2")
    assert [t.answered for t in tries] == [status, 200]
    assert await in_s3(s3, bucket) == body
    assert await stored(client, KEY) == body
    await nothing_pending(pending_uploads, RECOVERY)


@pytest.mark.parametrize("attempts", [1, 2, 3])
async def test_s3_max_attempts_counts_every_attempt_retries_included(
    make_config: MakeConfig, start_vidproxy: Start, s3_faults: S3Faults, attempts: int
) -> None:
    def always_fail(request: web.Request) -> web.StreamResponse | None:
        return s3_error(500, "InternalError") if is_put_object(request) else None

    s3_faults.rule = always_fail
    settings = {"endpoint_url": s3_faults.url, "max_attempts": attempts}
    client = await start_vidproxy(make_config("s3", s3=settings))
    response = await client.put("/videos/x", data=b"small")
    assert (response.status, (await response.json())["error"]) == (502, "upstream_error")
    assert len(s3_faults.requests(lambda r: r.method == "PUT")) == attempts
