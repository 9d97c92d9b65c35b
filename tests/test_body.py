"""body.py and the stores' put paths: every way an upload arrives, ends or fails, over HTTP.

A failed upload must leave nothing behind (no object, no S3 multipart upload, no
temp file) and must leave an older object under the same key byte for byte.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestClient, TestServer
from conftest import PART_SIZE, Connect, chunked
from rigs.objects import nothing_pending, stored
from rigs.objects import put_untyped as put
from yarl import URL

from vidproxy.config import Config

Client = TestClient[Any, Any]
Pending = Callable[[], Awaitable[list[str]]]
Wait = Callable[..., Awaitable[None]]

KEY = "clip.mp4"
OLD = random.Random(1).randbytes(3000)
MULTIPART = 2 * PART_SIZE + 1000  # three parts: 5 MiB, 5 MiB, 1000 B
SMALL = 100_000


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def pieces(body: bytes, size: int = 256 * 1024) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


# ---- bodies that arrive whole ------------------------------------------------------


@pytest.mark.parametrize(
    "size", [0, 1, PART_SIZE - 1, PART_SIZE, PART_SIZE + 1, MULTIPART], ids=str
)
async def test_content_length_upload_round_trips(client: Client, size: int) -> None:
    body = payload(size)
    answer = await put(client, KEY, body)
    assert (answer["size"], answer["sha256"]) == (size, sha256(body))
    assert await stored(client, KEY) == body


@pytest.mark.parametrize("size", [0, SMALL, MULTIPART], ids=str)
async def test_chunked_upload_round_trips(client: Client, size: int) -> None:
    body = payload(size)
    response = await client.put(f"/videos/{KEY}", data=pieces(body))
    assert response.status == 201
    assert (await response.json())["sha256"] == sha256(body)
    assert await stored(client, KEY) == body


@pytest.mark.parametrize("size", [SMALL, MULTIPART], ids=str)
async def test_expect_100_continue_upload_round_trips(
    client: Client, raw_connect: Connect, size: int
) -> None:
    body = payload(size)
    connection = await raw_connect(client)
    headers = {"Content-Length": str(size), "Expect": "100-continue"}
    await connection.send_head("PUT", f"/videos/{KEY}", headers)
    status, _ = await connection.read_head()
    assert status == 100  # before a single body byte was sent
    await connection.send(body)
    response = await connection.response()
    assert (response.status, response.json()["sha256"]) == (201, sha256(body))
    assert await stored(client, KEY) == body


@pytest.mark.parametrize("chunked_body", [False, True], ids=["content-length", "chunked"])
async def test_a_body_of_more_parts_than_part_buffers_round_trips(
    client: Client, chunked_body: bool
) -> None:
    # Seven parts through three reused part buffers (upload_concurrency 2, plus one).
    body = payload(6 * PART_SIZE + 12345, seed=7)
    response = await client.put(f"/videos/{KEY}", data=pieces(body) if chunked_body else body)
    assert response.status == 201
    assert (await response.json())["sha256"] == sha256(body)
    assert await stored(client, KEY) == body


async def test_zero_byte_chunked_body_is_stored(client: Client, raw_connect: Connect) -> None:
    connection = await raw_connect(client)
    await connection.send_head("PUT", f"/videos/{KEY}", {"Transfer-Encoding": "chunked"})
    await connection.send(b"0\r\n\r\n")
    response = await connection.response()
    assert (response.status, response.json()["size"]) == (201, 0)
    assert await stored(client, KEY) == b""


async def test_concurrent_puts_to_one_key_leave_one_whole_body(
    backend: str, make_config: Callable[..., Any], start_vidproxy: Callable[..., Any]
) -> None:
    # moto answers 500 now and then to racing writes of one key; production
    # settings retry that, as they would on S3.
    client = await start_vidproxy(make_config(backend, s3={"max_attempts": 3}))
    bodies = [payload(SMALL, seed) for seed in (10, 11, 12)]
    answers = await asyncio.gather(*(put(client, KEY, body) for body in bodies))
    assert all(answer["size"] == SMALL for answer in answers)
    assert await stored(client, KEY) in bodies


# ---- how S3 is used -------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["s3"])
async def test_body_below_one_part_is_a_single_put_object(
    client: Client, s3: Any, bucket: str
) -> None:
    await put(client, KEY, payload(PART_SIZE - 1))
    assert "-" not in s3.head_object(Bucket=bucket, Key=KEY)["ETag"]


@pytest.mark.parametrize("backend", ["s3"])
async def test_known_length_body_goes_up_in_part_size_parts(
    client: Client, s3: Any, bucket: str
) -> None:
    await put(client, KEY, payload(MULTIPART))
    assert s3.head_object(Bucket=bucket, Key=KEY)["ETag"].endswith('-3"')


@pytest.mark.parametrize("backend", ["s3"])
async def test_chunked_body_goes_up_in_part_size_parts(
    client: Client, s3: Any, bucket: str
) -> None:
    await client.put(f"/videos/{KEY}", data=pieces(payload(MULTIPART)))
    assert s3.head_object(Bucket=bucket, Key=KEY)["ETag"].endswith('-3"')


@pytest.mark.parametrize("backend", ["s3"])
async def test_s3_object_keeps_the_content_type(client: Client, s3: Any, bucket: str) -> None:
    await put(client, KEY, payload(MULTIPART))
    assert s3.head_object(Bucket=bucket, Key=KEY)["ContentType"] == "video/mp4"


# ---- X-Content-SHA256 -------------------------------------------------------------------


@pytest.mark.parametrize("size", [SMALL, MULTIPART], ids=str)
async def test_matching_checksum_is_stored_and_served(client: Client, size: int) -> None:
    body = payload(size)
    await put(client, KEY, body, **{"X-Content-SHA256": sha256(body).upper()})
    response = await client.head(f"/videos/{KEY}")
    assert response.headers["X-Content-SHA256"] == sha256(body)


async def test_served_checksum_after_a_single_part_upload(client: Client) -> None:
    body = payload(SMALL)
    await put(client, KEY, body)
    assert (await client.head(f"/videos/{KEY}")).headers["X-Content-SHA256"] == sha256(body)


@pytest.mark.parametrize("backend", ["fs"])
async def test_fs_serves_the_checksum_of_a_large_upload(client: Client) -> None:
    body = payload(MULTIPART)
    await client.put(f"/videos/{KEY}", data=pieces(body))
    assert (await client.head(f"/videos/{KEY}")).headers["X-Content-SHA256"] == sha256(body)


async def test_a_served_checksum_is_never_wrong(client: Client) -> None:
    # S3 fixes metadata at CreateMultipartUpload: without the client's header a
    # multipart object may have no checksum (documented), but never a wrong one.
    body = payload(MULTIPART)
    await client.put(f"/videos/{KEY}", data=pieces(body))
    served = (await client.head(f"/videos/{KEY}")).headers.get("X-Content-SHA256")
    assert served in (None, sha256(body))


@pytest.mark.parametrize("size", [SMALL, MULTIPART], ids=str)
async def test_checksum_mismatch_is_400_and_keeps_the_old_object(
    client: Client, pending_uploads: Pending, wait_until: Wait, size: int
) -> None:
    await put(client, KEY, OLD)
    response = await client.put(
        f"/videos/{KEY}", data=payload(size), headers={"X-Content-SHA256": "0" * 64}
    )
    assert (response.status, (await response.json())["error"]) == (400, "checksum_mismatch")
    await nothing_pending(pending_uploads)
    assert await stored(client, KEY) == OLD


async def test_checksum_mismatch_on_a_new_key_stores_nothing(client: Client) -> None:
    response = await client.put("/videos/new", data=b"abc", headers={"X-Content-SHA256": "0" * 64})
    assert response.status == 400
    assert await stored(client, "new") is None


@pytest.mark.parametrize("backend", ["fs"])
@pytest.mark.parametrize("value", ["abc", "0" * 63, "g" * 64, "0" * 65])
async def test_malformed_checksum_header_is_400(client: Client, value: str) -> None:
    response = await client.put(f"/videos/{KEY}", data=b"x", headers={"X-Content-SHA256": value})
    assert (response.status, (await response.json())["error"]) == (400, "invalid_checksum")


# ---- lengths and limits ----------------------------------------------------------------


@pytest.mark.parametrize("backend", ["fs"])
@pytest.mark.parametrize(("method", "path"), [("PUT", f"/videos/{KEY}"), ("POST", "/videos")])
async def test_no_length_and_no_chunking_is_411(
    client: Client, raw_connect: Connect, method: str, path: str
) -> None:
    connection = await raw_connect(client)
    await connection.send_head(method, path, {})
    response = await connection.response()
    assert (response.status, response.json()["error"]) == (411, "length_required")


@pytest.fixture
async def limited(
    backend: str, make_config: Callable[..., Config], start_vidproxy: Callable[..., Any]
) -> Client:
    """vidproxy accepting bodies up to one part plus 2 MiB: over the limit only
    after a multipart upload has begun."""
    limit = PART_SIZE + 2 * 1024 * 1024
    return await start_vidproxy(make_config(backend, server={"max_upload_bytes": limit}))


async def test_declared_length_over_the_limit_is_413_before_the_body(
    limited: Client, raw_connect: Connect
) -> None:
    connection = await raw_connect(limited)
    await connection.send_head("PUT", f"/videos/{KEY}", {"Content-Length": str(MULTIPART)})
    response = await connection.response()  # no body byte was sent
    assert (response.status, response.json()["error"]) == (413, "too_large")
    assert await stored(limited, KEY) is None


async def test_chunked_body_over_the_limit_is_413_and_keeps_the_old_object(
    limited: Client, raw_connect: Connect, pending_uploads: Pending, wait_until: Wait
) -> None:
    await put(limited, KEY, OLD)
    connection = await raw_connect(limited)
    await connection.send_head("PUT", f"/videos/{KEY}", {"Transfer-Encoding": "chunked"})
    await connection.send(chunked(payload(MULTIPART)))
    response = await connection.response()
    assert (response.status, response.json()["error"]) == (413, "too_large")
    await nothing_pending(pending_uploads)
    assert await stored(limited, KEY) == OLD


async def test_body_at_the_limit_is_accepted(limited: Client) -> None:
    body = payload(PART_SIZE + 2 * 1024 * 1024)
    response = await limited.put(f"/videos/{KEY}", data=pieces(body))
    assert response.status == 201
    assert await stored(limited, KEY) == body


# ---- clients that go away ------------------------------------------------------------


async def test_disconnect_mid_upload_keeps_the_old_object(
    client: Client, raw_connect: Connect, pending_uploads: Pending, wait_until: Wait
) -> None:
    await put(client, KEY, OLD)
    connection = await raw_connect(client)
    await connection.send_head("PUT", f"/videos/{KEY}", {"Content-Length": str(3 * PART_SIZE)})
    await connection.send(payload(MULTIPART))  # more than one part: a multipart upload

    async def under_way() -> bool:
        return await pending_uploads() != []

    await wait_until(under_way, "the upload to be under way")
    await connection.close()
    await nothing_pending(pending_uploads)
    assert await stored(client, KEY) == OLD


async def test_disconnect_mid_upload_of_a_new_key_stores_nothing(
    client: Client, raw_connect: Connect, pending_uploads: Pending, wait_until: Wait
) -> None:
    connection = await raw_connect(client)
    await connection.send_head("PUT", "/videos/new", {"Content-Length": str(3 * PART_SIZE)})
    await connection.send(payload(MULTIPART))

    async def under_way() -> bool:
        return await pending_uploads() != []

    await wait_until(under_way, "the upload to be under way")
    await connection.close()
    await nothing_pending(pending_uploads)
    assert await stored(client, "new") is None


@pytest.mark.parametrize("size", [SMALL, MULTIPART], ids=str)
async def test_body_shorter_than_content_length_keeps_the_old_object(
    client: Client, raw_connect: Connect, pending_uploads: Pending, wait_until: Wait, size: int
) -> None:
    await put(client, KEY, OLD)
    connection = await raw_connect(client)
    await connection.send_head("PUT", f"/videos/{KEY}", {"Content-Length": str(size + 1)})
    await connection.send(payload(size))
    connection.shutdown_write()
    try:
        response = await connection.response()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # aiohttp closes a half-closed connection: nobody left to answer
    else:
        assert (response.status, response.json()["error"]) == (400, "incomplete_body")
    await nothing_pending(pending_uploads)
    assert await stored(client, KEY) == OLD


@pytest.mark.parametrize("size", [SMALL, MULTIPART], ids=str)
async def test_complete_chunked_body_then_close_is_stored(
    client: Client, raw_connect: Connect, wait_until: Wait, size: int
) -> None:
    # What ffmpeg does: the whole chunked body, terminator included, then close at once.
    body = payload(size)
    connection = await raw_connect(client)
    headers = {"Transfer-Encoding": "chunked", "Connection": "close"}
    await connection.send_head("PUT", "/videos/ffmpeg.mp4", headers)
    await connection.send(chunked(body))
    await connection.close()

    async def arrived() -> bool:
        return (await client.head("/videos/ffmpeg.mp4")).status == 200

    await wait_until(arrived, "the upload to be stored")
    assert await stored(client, "ffmpeg.mp4") == body


# ---- S3 failing or slow mid-upload ----------------------------------------------------

S3_INTERNAL_ERROR = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
    b"<Message>injected by the test proxy</Message></Error>"
)
_HOP_HEADERS = {"host", "content-length", "transfer-encoding", "connection", "expect"}
Forward = Callable[[web.Request], Awaitable[web.Response]]
Hook = Callable[[web.Request, Forward], Awaitable[web.Response]]


@pytest.fixture
async def hooked_s3(moto_endpoint: str) -> AsyncIterator[Callable[[Hook], Awaitable[str]]]:
    """Start HTTP proxies in front of moto whose ``hook`` sees every S3 request:
    it may answer itself or ``forward`` it. Returns the proxy's endpoint URL."""
    session = ClientSession(auto_decompress=False)
    servers: list[TestServer] = []

    async def forward(request: web.Request) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        url = URL(moto_endpoint + request.raw_path, encoded=True)
        body = await request.read()
        async with session.request(request.method, url, headers=headers, data=body) as upstream:
            data = await upstream.read()
            kept = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_HEADERS}
            return web.Response(status=upstream.status, body=data, headers=kept)

    async def start(hook: Hook) -> str:
        async def handle(request: web.Request) -> web.Response:
            return await hook(request, forward)

        app = web.Application(client_max_size=2 * PART_SIZE)
        app.router.add_route("*", "/{tail:.*}", handle)
        server = TestServer(app)
        await server.start_server()
        servers.append(server)
        return str(server.make_url("")).rstrip("/")

    try:
        yield start
    finally:
        for server in servers:
            await server.close()
        await session.close()


@pytest.mark.parametrize("backend", ["s3"])
async def test_s3_failing_mid_upload_is_502_and_keeps_the_old_object(
    hooked_s3: Callable[[Hook], Awaitable[str]],
    make_config: Callable[..., Config],
    start_vidproxy: Callable[..., Any],
    s3: Any,
    bucket: str,
    pending_uploads: Pending,
    wait_until: Wait,
) -> None:
    async def fail_part_2(request: web.Request, forward: Forward) -> web.Response:
        if request.method == "PUT" and request.query.get("partNumber") == "2":
            return web.Response(status=500, body=S3_INTERNAL_ERROR, content_type="application/xml")
        return await forward(request)

    s3.put_object(Bucket=bucket, Key=KEY, Body=OLD)
    endpoint = await hooked_s3(fail_part_2)
    client = await start_vidproxy(make_config("s3", s3={"endpoint_url": endpoint}))
    response = await client.put(f"/videos/{KEY}", data=payload(MULTIPART))
    assert (response.status, (await response.json())["error"]) == (502, "upstream_error")
    await nothing_pending(pending_uploads)
    assert s3.get_object(Bucket=bucket, Key=KEY)["Body"].read() == OLD


@pytest.mark.parametrize("backend", ["s3"])
async def test_upload_cancelled_while_s3_creates_it_is_aborted(
    hooked_s3: Callable[[Hook], Awaitable[str]],
    make_config: Callable[..., Config],
    start_vidproxy: Callable[..., Awaitable[Client]],
    raw_connect: Connect,
    pending_uploads: Pending,
    wait_until: Wait,
) -> None:
    # A handler can be cancelled (aiohttp's handler_cancellation, a shutdown) while
    # CreateMultipartUpload is in flight: S3 creates the upload all the same, and
    # vidproxy must still learn its id and abort it.
    release = asyncio.Event()

    async def hold_create(request: web.Request, forward: Forward) -> web.Response:
        response = await forward(request)  # the upload now exists in S3
        if request.method == "POST" and "uploads" in request.query:
            await release.wait()
        return response

    endpoint = await hooked_s3(hold_create)
    config = make_config("s3", s3={"endpoint_url": endpoint})
    client = await start_vidproxy(config, handler_cancellation=True)
    connection = await raw_connect(client)
    await connection.send_head("PUT", f"/videos/{KEY}", {"Content-Length": str(MULTIPART)})
    await connection.send(payload(PART_SIZE))  # exactly one part: the create is sent

    async def created() -> bool:
        return await pending_uploads() != []

    await wait_until(created, "CreateMultipartUpload to reach S3")
    await connection.close()
    # One full round trip on the same loop: vidproxy has seen the close by now.
    assert (await client.get("/healthz")).status == 200
    release.set()
    await nothing_pending(pending_uploads)
