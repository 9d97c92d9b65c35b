"""Create-only writes (``If-None-Match: *``): of concurrent ones in one process,
exactly one wins, on every backend; whether S3 itself enforces the condition
(which replicas rely on) is probed once and reported.

Without the per-key serialization, 8 concurrent create-only PUTs all got 201 on
``rclone serve s3`` (it ignores the condition) and 2-8 did on moto with
multipart bodies (its conditional Complete races).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from conftest import PART_SIZE
from fault_rig import object_bytes, payload
from rclone_rig import (
    boto3_client,
    rclone_bucket_fixture,  # noqa: F401
    rclone_endpoint_fixture,  # noqa: F401
)

from vidproxy.config import Config
from vidproxy.keys import RESERVED_PREFIX

Client = TestClient[Any, Any]
Start = Callable[[Config], Awaitable[Client]]
MakeConfig = Callable[..., Config]

WRITERS = 8
SIZES = {"small": 3000, "multipart": PART_SIZE + 1000}
ROUNDS = {"small": 4, "multipart": 2}
GAUGE = "vidproxy_s3_create_only_enforced"


async def vidproxy_on(
    where: str, make_config: MakeConfig, start_vidproxy: Start, request: pytest.FixtureRequest
) -> tuple[Client, Any, str]:
    """vidproxy on fs, moto or rclone; a boto3 client and bucket to look with (S3)."""
    if where == "fs":
        return await start_vidproxy(make_config("fs")), None, ""
    if where == "moto":
        client = await start_vidproxy(make_config("s3"))
        return client, request.getfixturevalue("s3"), request.getfixturevalue("bucket")
    endpoint = request.getfixturevalue("rclone_endpoint")
    bucket = request.getfixturevalue("rclone_bucket")
    client = await start_vidproxy(
        make_config("s3", s3={"endpoint_url": endpoint, "bucket": bucket})
    )
    return client, boto3_client(endpoint), bucket


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("where", ["fs", "moto", "rclone"])
async def test_of_concurrent_create_only_puts_exactly_one_wins(
    make_config: MakeConfig,
    start_vidproxy: Start,
    request: pytest.FixtureRequest,
    where: str,
    size: str,
) -> None:
    client, s3, bucket = await vidproxy_on(where, make_config, start_vidproxy, request)
    for round_ in range(ROUNDS[size]):
        key = f"race-{round_}"
        bodies = [payload(SIZES[size], 100 * round_ + n) for n in range(WRITERS)]
        answers = await asyncio.gather(
            *(
                client.put(f"/videos/{key}", data=body, headers={"If-None-Match": "*"})
                for body in bodies
            )
        )
        statuses = [answer.status for answer in answers]
        assert sorted(statuses) == [201] + [412] * (WRITERS - 1), (round_, statuses)
        winner = bodies[statuses.index(201)]
        for answer in answers:
            if answer.status == 412:
                assert (await answer.json())["error"] == "precondition_failed"
        assert await (await client.get(f"/videos/{key}")).read() == winner
        if s3 is not None:
            assert await asyncio.to_thread(object_bytes, s3, bucket, key) == winner


async def metric(client: Client, name: str) -> str | None:
    text = await (await client.get("/metrics")).text()
    values = [line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")]
    return values[0] if values else None


@pytest.mark.parametrize(("where", "enforced"), [("moto", "1.0"), ("rclone", "0.0")])
async def test_whether_s3_enforces_create_only_is_probed_once_and_reported(
    make_config: MakeConfig,
    start_vidproxy: Start,
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
    where: str,
    enforced: str,
) -> None:
    caplog.set_level(logging.INFO)
    client, s3, bucket = await vidproxy_on(where, make_config, start_vidproxy, request)
    assert await metric(client, GAUGE) is None  # not asked yet
    assert (await client.get("/readyz")).status == 200
    assert await metric(client, GAUGE) == enforced
    lines = [r for r in caplog.records if "If-None-Match" in r.getMessage()]
    assert len(lines) == 1
    if enforced == "0.0":
        assert lines[0].levelname == "WARNING"
        assert "ignores If-None-Match: * on PutObject and CompleteMultipartUpload" in (
            lines[0].getMessage()
        )
    else:
        assert lines[0].levelname == "INFO"
    # Asked once: a later readiness check writes nothing.
    assert (await client.get("/readyz")).status == 200
    assert len([r for r in caplog.records if "If-None-Match" in r.getMessage()]) == 1
    # The probe leaves nothing behind: no object, no unfinished upload.
    listed = await asyncio.to_thread(s3.list_objects_v2, Bucket=bucket, Prefix=RESERVED_PREFIX)
    assert listed.get("Contents", []) == []
    uploads = await asyncio.to_thread(s3.list_multipart_uploads, Bucket=bucket)
    assert uploads.get("Uploads", []) == []


async def test_fs_reports_no_create_only_gauge(
    make_config: MakeConfig, start_vidproxy: Start
) -> None:
    client = await start_vidproxy(make_config("fs"))
    assert (await client.get("/readyz")).status == 200
    assert await metric(client, GAUGE) is None
