"""The stale-upload sweeper against a real moto (and rclone where named), with a
tiny ``s3.abort_stale_uploads_after``: it aborts only uploads idle that long,
never one this process is receiving, and it never stops sweeping.

moto reports every upload as initiated in 2010, so the age it gives is no
guide: what counts is the newest part's ``LastModified``, which is real.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import PART_SIZE, Connect
from fault_rig import (
    S3Faults,
    is_list_uploads,
    object_bytes,
    payload,
    s3_error,
    s3_faults_fixture,  # noqa: F401
)
from rclone_rig import (
    boto3_client,
    rclone_bucket_fixture,  # noqa: F401
    rclone_endpoint_fixture,  # noqa: F401
)
from rigs.objects import nothing_pending
from rigs.s3 import unfinished_uploads as pending

from vidproxy.config import Config
from vidproxy.errors import UpstreamTimeout
from vidproxy.storage.sweeper import repeat_forever
from vidproxy.web.appkeys import STORE

Client = TestClient[Any, Any]
Start = Callable[[Config], Awaitable[Client]]
MakeConfig = Callable[..., Config]
Wait = Callable[..., Awaitable[None]]

KEY = "clip.mp4"
MULTIPART = 2 * PART_SIZE + 1000
FIRST = PART_SIZE + 70_000  # bytes sent before the upload pauses: one part is in S3
# Sweep every 2 s (a quarter of this); a part younger than this is activity.
IDLE_LIMIT = 8.0
SWEEPS = 40.0  # seconds to wait for a few sweeps (of up to IDLE_LIMIT) on a loaded machine


def uploads(s3: Any, bucket: str) -> list[dict[str, Any]]:
    try:
        return list(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))
    except s3.exceptions.NoSuchUpload:  # rclone, for a bucket that never had one
        return []


def orphan(s3: Any, bucket: str, key: str, *, parts: int = 1) -> str:
    """An upload left by a process that died: its parts, no Complete."""
    upload_id = str(s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"])
    for number in range(1, parts + 1):
        s3.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=b"x")
    return upload_id


def sweeps_started(client: Client) -> int:
    return int(client.app[STORE].stats.requests["ListMultipartUploads"])


async def wait_for_sweeps(client: Client, count: int, wait_until: Wait) -> None:
    """Until ``count`` more sweeps have started (so all but the last have ended)."""
    target = sweeps_started(client) + count

    async def swept() -> bool:
        return sweeps_started(client) >= target

    await wait_until(swept, f"{count} more sweeps", within=SWEEPS)


async def all_stale_aborted(s3: Any, bucket: str) -> None:
    await nothing_pending(lambda: pending(s3, bucket), SWEEPS, "every stale upload to be aborted")


def sweep_requests(s3_faults: S3Faults) -> list[str]:
    """The sweeper's requests in order: "list" (a sweep begins), "parts", "abort"."""
    names = []
    for r in s3_faults.seen:
        if is_list_uploads(r):
            names.append("list")
        elif r.method == "GET" and "uploadId" in r.query:
            names.append("parts")
        elif r.method == "DELETE" and "uploadId" in r.query:
            names.append("abort")
    return names


def sweeping(make_config: MakeConfig, limit: float = IDLE_LIMIT, **s3: Any) -> Config:
    return make_config("s3", s3={"abort_stale_uploads_after": limit, **s3})


# ---- what is stale -------------------------------------------------------------------------


async def test_an_upload_is_stale_once_its_newest_part_is_older_than_the_limit(
    make_config: MakeConfig,
    start_vidproxy: Start,
    s3_faults: S3Faults,
    s3: Any,
    bucket: str,
    wait_until: Wait,
) -> None:
    # moto says it began in 2010; its part, just sent, says it is alive.
    orphan(s3, bucket, "recent.mp4")
    await start_vidproxy(sweeping(make_config, endpoint_url=s3_faults.url))
    await all_stale_aborted(s3, bucket)  # idle from now on: aborted in time
    order = sweep_requests(s3_faults)
    # The sweep at start looked at its parts and kept it; a later one aborted it.
    assert order[:2] == ["list", "parts"], order
    assert order.index("abort") > order.index("list", 1), order


async def test_an_upload_without_parts_is_aborted_only_by_a_second_sweep(
    make_config: MakeConfig,
    start_vidproxy: Start,
    s3_faults: S3Faults,
    s3: Any,
    bucket: str,
    wait_until: Wait,
) -> None:
    orphan(s3, bucket, "empty.mp4", parts=0)
    client = await start_vidproxy(sweeping(make_config, 1, endpoint_url=s3_faults.url))
    await all_stale_aborted(s3, bucket)
    order = [r for r in sweep_requests(s3_faults) if r != "parts"]
    assert order[:3] == ["list", "list", "abort"], order
    assert sweeps_started(client) >= 2


# ---- live uploads ------------------------------------------------------------------------


async def test_an_upload_this_process_is_receiving_is_never_swept(
    make_config: MakeConfig,
    start_vidproxy: Start,
    raw_connect: Connect,
    s3: Any,
    bucket: str,
    wait_until: Wait,
) -> None:
    # The report's case: an upload outlasting abort_stale_uploads_after was aborted
    # under the client, which then got 404. Here its one part is idle past the limit.
    client = await start_vidproxy(sweeping(make_config, 1))
    body = payload(MULTIPART, 5)
    connection = await raw_connect(client)
    await connection.send_head("PUT", f"/videos/{KEY}", {"Content-Length": str(MULTIPART)})
    await connection.send(body[:FIRST])

    async def part_in_s3() -> bool:
        listed = await asyncio.to_thread(uploads, s3, bucket)
        if not listed:
            return False
        parts = s3.list_parts(Bucket=bucket, Key=KEY, UploadId=listed[0]["UploadId"])
        return bool(parts.get("Parts"))

    await wait_until(part_in_s3, "the first part to be in S3")
    await wait_for_sweeps(client, 3, wait_until)  # each a second apart: the part is idle
    await connection.send(body[FIRST:])
    response = await connection.response()
    assert response.status == 201, response.body
    assert object_bytes(s3, bucket, KEY) == body
    assert await pending(s3, bucket) == []


@pytest.mark.parametrize("where", ["moto", "rclone"])
async def test_an_upload_aborted_under_a_live_put_is_503_upload_aborted(
    make_config: MakeConfig,
    start_vidproxy: Start,
    raw_connect: Connect,
    request: pytest.FixtureRequest,
    wait_until: Wait,
    where: str,
) -> None:
    # Another replica (or an operator) aborts the upload while the client sends it.
    if where == "moto":
        s3, bucket = request.getfixturevalue("s3"), request.getfixturevalue("bucket")
        config = make_config("s3")
    else:
        endpoint = request.getfixturevalue("rclone_endpoint")
        s3, bucket = boto3_client(endpoint), request.getfixturevalue("rclone_bucket")
        config = make_config("s3", s3={"endpoint_url": endpoint, "bucket": bucket})
    old = payload(3000, 6)
    s3.put_object(Bucket=bucket, Key=KEY, Body=old)
    client = await start_vidproxy(config)
    body = payload(MULTIPART, 7)
    connection = await raw_connect(client)
    await connection.send_head("PUT", f"/videos/{KEY}", {"Content-Length": str(MULTIPART)})
    await connection.send(body[:FIRST])

    async def begun() -> bool:
        return await pending(s3, bucket) == [KEY]

    await wait_until(begun, "the multipart upload to begin")
    (upload,) = await asyncio.to_thread(uploads, s3, bucket)
    s3.abort_multipart_upload(Bucket=bucket, Key=KEY, UploadId=upload["UploadId"])
    await connection.send(body[FIRST:])
    response = await connection.response()
    assert response.status == 503, response.body
    assert response.json()["error"] == "upload_aborted"
    assert "aborted" in response.json()["message"]
    assert int(response.headers["Retry-After"]) > 0
    assert object_bytes(s3, bucket, KEY) == old
    assert await pending(s3, bucket) == []


# ---- the sweeper never stops -------------------------------------------------------------


async def test_an_abort_that_loses_the_race_to_another_replica_keeps_the_sweeper_going(
    make_config: MakeConfig,
    start_vidproxy: Start,
    s3_faults: S3Faults,
    s3: Any,
    bucket: str,
    wait_until: Wait,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Two replicas sweep one bucket; the other one's abort lands first, so ours
    # gets NoSuchUpload. That used to end the sweeper's task for good.
    lost = []

    def other_replica_first(request: web.Request) -> web.StreamResponse | None:
        if request.method == "DELETE" and "uploadId" in request.query:
            key = request.path.split("/", 2)[2]
            s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=request.query["uploadId"])
            lost.append(key)
        return None  # forwarded: moto answers NoSuchUpload

    s3_faults.rule = other_replica_first
    orphan(s3, bucket, "first.mp4", parts=0)
    client = await start_vidproxy(sweeping(make_config, 1, endpoint_url=s3_faults.url))
    await all_stale_aborted(s3, bucket)
    assert lost == ["first.mp4"]
    s3_faults.rule = None
    orphan(s3, bucket, "later.mp4", parts=0)
    await all_stale_aborted(s3, bucket)
    aborts = s3_faults.requests(lambda r: r.method == "DELETE" and "uploadId" in r.query)
    assert [r.answered for r in aborts] == [404, 204]
    assert sweeps_started(client) >= 3
    # Losing that race is what replicas do, not a problem to report.
    assert [r.getMessage() for r in caplog.records if "sweep" in r.getMessage()] == []


async def test_a_sweep_failing_in_an_unforeseen_way_is_logged_and_the_next_runs(
    make_config: MakeConfig,
    start_vidproxy: Start,
    s3_faults: S3Faults,
    s3: Any,
    bucket: str,
    wait_until: Wait,
    caplog: pytest.LogCaptureFixture,
) -> None:
    garbled = {"left": 2}

    def listing_without_ids(request: web.Request) -> web.StreamResponse | None:
        if is_list_uploads(request) and garbled["left"]:
            garbled["left"] -= 1
            xml = (
                "<ListMultipartUploadsResult><Bucket>b</Bucket>"
                "<Upload><Key>odd.mp4</Key></Upload></ListMultipartUploadsResult>"
            )
            return web.Response(text=xml, content_type="application/xml")
        return None

    s3_faults.rule = listing_without_ids
    orphan(s3, bucket, "stale.mp4", parts=0)
    await start_vidproxy(sweeping(make_config, 1, endpoint_url=s3_faults.url))
    await all_stale_aborted(s3, bucket)
    assert garbled["left"] == 0
    failures = [r for r in caplog.records if "stale upload sweep failed" in r.getMessage()]
    assert len(failures) == 2
    assert all(r.exc_info is not None for r in failures)  # a traceback: it is a bug to see


async def test_a_sweep_s3_refuses_is_a_warning_and_the_next_runs(
    make_config: MakeConfig,
    start_vidproxy: Start,
    s3_faults: S3Faults,
    s3: Any,
    bucket: str,
    wait_until: Wait,
    caplog: pytest.LogCaptureFixture,
) -> None:
    refused = {"left": 2}

    def deny_listing(request: web.Request) -> web.StreamResponse | None:
        if is_list_uploads(request) and refused["left"]:
            refused["left"] -= 1
            return s3_error(403, "AccessDenied")
        return None

    s3_faults.rule = deny_listing
    orphan(s3, bucket, "stale.mp4", parts=0)
    await start_vidproxy(sweeping(make_config, 1, endpoint_url=s3_faults.url))
    await all_stale_aborted(s3, bucket)
    warnings = [r for r in caplog.records if "stale upload sweep failed" in r.getMessage()]
    assert len(warnings) == 2
    assert all(r.levelname == "WARNING" and r.exc_info is None for r in warnings)


async def test_a_sweeper_outlives_any_failure_of_one_sweep(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Both sweepers (stale multipart uploads, expired tus uploads) run on this loop.
    failures: list[BaseException] = [RuntimeError("a bug"), UpstreamTimeout("slow S3")]
    third_sweep = asyncio.Event()

    async def sweep() -> None:
        if failures:
            raise failures.pop(0)
        third_sweep.set()

    task = asyncio.ensure_future(repeat_forever(sweep, 0.01, "test sweep"))
    try:
        await asyncio.wait_for(third_sweep.wait(), 5)
    finally:
        task.cancel()
    logged = [r for r in caplog.records if "test sweep failed" in r.getMessage()]
    assert [r.exc_info is not None for r in logged] == [True, False]
