"""multipart.py's part buffers and part bodies, and how S3Store learns which ETag
a backend shows for a multipart object."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from botocore.utils import determine_content_length
from conftest import PART_SIZE
from fault_rig import (
    Rule,
    S3Faults,
    payload,
    s3_faults_fixture,  # noqa: F401
)
from rigs.objects import put

from vidproxy.storage.multipart import SEND_SLICE, PartBody, PartBuffers

Client = TestClient[Any, Any]
MULTIPART = 2 * PART_SIZE + 1000


def md5_tag(data: bytes) -> str:
    return f'"{hashlib.md5(data).hexdigest()}"'


# ---- PartBody and PartBuffers -------------------------------------------------------


async def echo_sha256(request: web.Request) -> web.Response:
    return web.Response(text=hashlib.sha256(await request.read()).hexdigest())


async def test_part_body_is_sent_whole_and_again_after_a_rewind() -> None:
    data = payload(3 * SEND_SLICE + 5)
    app = web.Application(client_max_size=0)
    app.router.add_put("/", echo_sha256)
    body = PartBody(memoryview(bytearray(data)))
    async with TestServer(app) as server, aiohttp.ClientSession() as session:
        for _ in range(2):  # as botocore retries: seek(0), then the same body again
            body.seek(0)
            async with session.put(server.make_url("/"), data=body) as response:
                assert await response.text() == hashlib.sha256(data).hexdigest()


def test_part_body_is_a_file_like_object_to_botocore() -> None:
    body = PartBody(memoryview(b"abcdef")[1:])
    assert determine_content_length(body) == 5
    assert (body.read(2), body.read(), body.tell()) == (b"bc", b"def", 5)
    body.seek(0)
    assert body.read() == b"bcdef"


async def test_part_buffers_are_at_most_count_and_reused() -> None:
    buffers = PartBuffers(2)
    first, _ = await buffers.take(10), await buffers.take(10)
    third = asyncio.ensure_future(buffers.take(10))
    await asyncio.sleep(0.01)
    assert not third.done()
    buffers.give_back(first)
    assert (await third).obj is first.obj


async def test_a_part_buffer_grows_with_the_part_size() -> None:
    buffers = PartBuffers(1)
    buffers.give_back(await buffers.take(10))
    assert len(await buffers.take(20)) == 20


# ---- the ETag an upload answers ---------------------------------------------------------


async def test_a_backend_showing_completes_etag_is_asked_only_once(
    make_config: Any, start_vidproxy: Any, s3_faults: S3Faults
) -> None:
    client = await start_vidproxy(make_config("s3", s3={"endpoint_url": s3_faults.url}))
    answers = [await put(client, f"k{n}.bin", payload(MULTIPART, n)) for n in range(3)]
    assert len(s3_faults.requests(lambda r: r.method == "HEAD")) == 1
    for n, answer in enumerate(answers):
        assert (await client.head(f"/videos/k{n}.bin")).headers["ETag"] == answer["etag"]


def head_shows_content_md5(bodies: dict[str, bytes]) -> Rule:
    """rclone's way: HEAD shows a multipart object's plain MD5, not Complete's tag."""

    def rule(request: web.Request) -> web.StreamResponse | None:
        body = bodies.get(request.path.rsplit("/", 1)[-1])
        if request.method != "HEAD" or body is None:
            return None
        headers = {"ETag": md5_tag(body), "Content-Length": str(len(body))}
        return web.Response(headers=headers, content_type="video/mp4")

    return rule


async def test_a_backend_showing_the_content_md5_gets_it_computed_after_the_first_upload(
    make_config: Any, start_vidproxy: Any, s3_faults: S3Faults
) -> None:
    bodies = {f"k{n}.bin": payload(MULTIPART, n) for n in range(3)}
    s3_faults.rule = head_shows_content_md5(bodies)
    client = await start_vidproxy(make_config("s3", s3={"endpoint_url": s3_faults.url}))
    answers = {key: await put(client, key, body) for key, body in bodies.items()}
    assert len(s3_faults.requests(lambda r: r.method == "HEAD")) == 1
    assert all(answers[key]["etag"] == md5_tag(body) for key, body in bodies.items())
