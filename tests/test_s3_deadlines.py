"""Every S3 request ends: no ``Expect: 100-continue`` for a server to leave
unanswered, a deadline (``s3.request_deadline``) over each request and its
retries, and an upload whose client left gives its slot back.

The hang was found on ``rclone serve s3``: ``PUT f/inner`` while an object ``f``
exists is a request rclone cannot carry out; asked with ``Expect: 100-continue``
it never answered, and vidproxy waited for good, holding the upload slot.
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
    is_complete,
    is_put_object,
    is_upload_part,
    object_bytes,
    payload,
    s3_faults_fixture,  # noqa: F401
)
from rclone_rig import (
    boto3_client,
    rclone_bucket_fixture,  # noqa: F401
    rclone_endpoint_fixture,  # noqa: F401
)
from rigs.objects import nothing_pending
from rigs.s3 import unfinished_uploads

from vidproxy.config import Config
from vidproxy.web.appkeys import UPLOADS

Client = TestClient[Any, Any]
Start = Callable[[Config], Awaitable[Client]]
MakeConfig = Callable[..., Config]
Wait = Callable[..., Awaitable[None]]

SMALL = 3000
MULTIPART = 2 * PART_SIZE + 1000
DEADLINE = 1.0  # seconds: s3.request_deadline where a test waits for it
# Long enough that an answer before it is not the deadline's doing.
GENEROUS_DEADLINE = 30.0
ANSWER_TIMEOUT = 60.0
DEFAULT_SLOTS = 64  # server.max_concurrent_uploads' default


def on_rclone(make_config: MakeConfig, endpoint: str, bucket: str, **s3: Any) -> Config:
    return make_config("s3", s3={"endpoint_url": endpoint, "bucket": bucket, **s3})


# ---- rclone: the reported hang ---------------------------------------------------------


@pytest.mark.parametrize("size", [SMALL, MULTIPART], ids=["PutObject", "multipart"])
async def test_a_put_under_an_objects_name_is_answered_at_once_on_rclone(
    make_config: MakeConfig,
    start_vidproxy: Start,
    rclone_endpoint: str,
    rclone_bucket: str,
    size: int,
) -> None:
    # The report's case: object "f" exists, then PUT "f/inner". rclone cannot make
    # the directory "f" and says so (InternalError) once nobody waits for 100 Continue.
    settings = {"request_deadline": GENEROUS_DEADLINE}
    client = await start_vidproxy(
        on_rclone(make_config, rclone_endpoint, rclone_bucket, **settings)
    )
    outer = payload(SMALL, 1)
    assert (await client.put("/videos/f", data=outer)).status == 201
    response = await client.put("/videos/f/inner", data=payload(size, 2), timeout=ANSWER_TIMEOUT)
    # 502 is rclone's refusal; 504 would be the deadline ending a hang.
    assert response.status == 502, await response.text()
    assert (await response.json())["error"] == "upstream_error"
    s3 = boto3_client(rclone_endpoint)
    assert await asyncio.to_thread(object_bytes, s3, rclone_bucket, "f") == outer
    assert await unfinished_uploads(s3, rclone_bucket) == []
    assert client.app[UPLOADS].in_use == 0


async def test_no_s3_request_asks_for_100_continue(
    make_config: MakeConfig, start_vidproxy: Start, s3_faults: S3Faults
) -> None:
    client = await start_vidproxy(make_config("s3", s3={"endpoint_url": s3_faults.url}))
    for key, size in (("small", SMALL), ("multi", MULTIPART)):
        assert (await client.put(f"/videos/{key}", data=payload(size))).status == 201
    uploads = s3_faults.requests(lambda r: r.method in ("PUT", "POST"))
    assert {r.query.get("partNumber") for r in uploads} >= {None, "1", "2", "3"}
    assert [r.path for r in uploads if "Expect" in r.headers] == []


# ---- a stalled request ends at the deadline ---------------------------------------------

STALLS: dict[str, Callable[[web.Request], bool]] = {
    "PutObject": is_put_object,
    "UploadPart": lambda r: is_upload_part(r, 2),
    "CompleteMultipartUpload": is_complete,
}


@pytest.mark.parametrize("operation", list(STALLS))
async def test_an_upload_whose_s3_request_stalls_is_504_and_leaves_nothing(
    make_config: MakeConfig,
    start_vidproxy: Start,
    s3_faults: S3Faults,
    s3: Any,
    bucket: str,
    wait_until: Wait,
    caplog: pytest.LogCaptureFixture,
    operation: str,
) -> None:
    old = payload(SMALL, 3)
    s3.put_object(Bucket=bucket, Key="clip", Body=old)
    s3_faults.stall = STALLS[operation]
    settings = {"endpoint_url": s3_faults.url, "request_deadline": DEADLINE}
    client = await start_vidproxy(make_config("s3", s3=settings))
    size = SMALL if operation == "PutObject" else MULTIPART
    response = await client.put("/videos/clip", data=payload(size, 4), timeout=ANSWER_TIMEOUT)
    assert response.status == 504
    assert await response.json() == {
        "error": "upstream_timeout",
        "message": f"the storage backend did not answer in time ({operation})",
    }
    assert s3_faults.stalled, "the stall was never reached"
    assert f"S3 {operation} got no answer within s3.request_deadline (1 s)" in caplog.text
    assert object_bytes(s3, bucket, "clip") == old

    await nothing_pending(
        lambda: unfinished_uploads(s3, bucket), what="the stalled upload to be aborted"
    )
    assert client.app[UPLOADS].in_use == 0


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/videos/clip", 504), ("HEAD", "/videos/clip", 504), ("GET", "/videos", 504)],
)
async def test_a_read_whose_s3_request_stalls_is_504(
    make_config: MakeConfig,
    start_vidproxy: Start,
    s3_faults: S3Faults,
    method: str,
    path: str,
    status: int,
) -> None:
    s3_faults.stall = lambda request: request.method in ("GET", "HEAD")
    settings = {"endpoint_url": s3_faults.url, "request_deadline": DEADLINE}
    client = await start_vidproxy(make_config("s3", s3=settings, cache={"enabled": False}))
    response = await client.request(method, path, timeout=ANSWER_TIMEOUT)
    assert response.status == status
    if method != "HEAD":
        assert (await response.json())["error"] == "upstream_timeout"


async def test_readyz_is_503_not_ready_when_s3_does_not_answer(
    make_config: MakeConfig, start_vidproxy: Start, s3_faults: S3Faults
) -> None:
    s3_faults.stall = lambda request: request.method == "HEAD"
    settings = {"endpoint_url": s3_faults.url, "request_deadline": DEADLINE}
    client = await start_vidproxy(make_config("s3", s3=settings))
    response = await client.get("/readyz", timeout=ANSWER_TIMEOUT)
    assert response.status == 503
    assert await response.json() == {
        "error": "upstream_unavailable",
        "message": "the storage backend did not answer in time (HeadBucket)",
    }


# ---- abandoned uploads give their slots back -------------------------------------------


async def test_uploads_abandoned_on_a_stalled_s3_do_not_block_the_next_upload(
    make_config: MakeConfig,
    start_vidproxy: Start,
    s3_faults: S3Faults,
    s3: Any,
    bucket: str,
    raw_connect: Connect,
    wait_until: Wait,
) -> None:
    # 64 + 1 clients send a whole small body and leave while S3 sits on their
    # PutObject: every slot is taken by a request nobody waits for any more.
    s3_faults.stall = lambda request: is_put_object(request) and "/stuck-" in request.path
    settings = {"endpoint_url": s3_faults.url, "request_deadline": DEADLINE}
    client = await start_vidproxy(make_config("s3", s3=settings))
    for n in range(DEFAULT_SLOTS + 1):
        connection = await raw_connect(client)
        body = payload(100, n)
        await connection.send_head("PUT", f"/videos/stuck-{n}", {"Content-Length": "100"})
        await connection.send(body)
        await connection.close()

    async def all_at_s3() -> bool:
        return len(s3_faults.stalled) >= DEFAULT_SLOTS

    await wait_until(all_at_s3, "the abandoned uploads to reach S3", within=20 * DEADLINE)
    fresh = payload(SMALL, 99)

    async def next_upload_stored() -> bool:
        response = await client.put("/videos/fresh", data=fresh)
        return response.status == 201

    await wait_until(next_upload_stored, "an upload to get a slot again", within=20 * DEADLINE)
    assert object_bytes(s3, bucket, "fresh") == fresh

    async def slots_free() -> bool:
        return client.app[UPLOADS].in_use == 0

    await wait_until(slots_free, "every abandoned upload to give its slot back", 20 * DEADLINE)
    for n in range(DEFAULT_SLOTS + 1):
        assert object_bytes(s3, bucket, f"stuck-{n}") is None
