"""Limits and bad input over real sockets: body size and read deadline, the upload
slots, request smuggling, oversized heads, keys that try to leave their directory,
Range garbage, and what may never show in a response header or leave S3's side.

aiohttp's own parser refuses malformed requests (smuggling shapes, oversized heads)
before any route runs; vidproxy.web.protocol makes that answer JSON too, with a fixed
message per kind and a closed connection: those tests check the status, the body,
the speed and the close.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import PART_SIZE, Connect, RawConnection, chunked, free_port
from fault_rig import (
    S3Faults,
    is_upload_part,
    payload,
    s3_error,
    s3_faults_fixture,  # noqa: F401
)
from rigs.objects import nothing_pending, put, stored

from vidproxy.config import Config
from vidproxy.keys import key_digest

Client = TestClient[Any, Any]
Pending = Callable[[], Awaitable[list[str]]]
Wait = Callable[..., Awaitable[None]]

KEY = "clip.mp4"
OLD = payload(3000, 1)
MULTIPART = 2 * PART_SIZE + 1000
QUICK = 3.0  # seconds: every refusal here comes at least this fast
BODY_TIMEOUT = 0.5


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


async def timed_response(connection: RawConnection) -> tuple[Any, float]:
    started = time.monotonic()
    response = await connection.response()
    return response, time.monotonic() - started


# ---- max_upload_bytes --------------------------------------------------------------------


@pytest.fixture
async def small_limit(
    backend: str, make_config: Callable[..., Config], start_vidproxy: Callable[..., Any]
) -> Client:
    return await start_vidproxy(make_config(backend, server={"max_upload_bytes": PART_SIZE + 10}))


@pytest.mark.parametrize("backend", ["fs"])
async def test_oversized_declared_body_gets_413_instead_of_100_continue(
    small_limit: Client, raw_connect: Connect
) -> None:
    connection = await raw_connect(small_limit)
    head = {"Content-Length": str(PART_SIZE + 11), "Expect": "100-continue"}
    await connection.send_head("PUT", f"/videos/{KEY}", head)
    async with asyncio.timeout(QUICK):
        status, _ = await connection.read_head()
    assert status == 413


async def test_chunked_post_over_the_limit_is_413_and_stores_nothing(
    small_limit: Client, raw_connect: Connect, pending_uploads: Pending, wait_until: Wait
) -> None:
    connection = await raw_connect(small_limit)
    await connection.send_head("POST", "/videos", {"Transfer-Encoding": "chunked"})
    await connection.send(chunked(payload(MULTIPART)))
    response = await connection.response()
    assert (response.status, response.json()["error"]) == (413, "too_large")
    await nothing_pending(pending_uploads)
    assert (await (await small_limit.get("/videos")).json())["items"] == []


# ---- server.body_timeout -------------------------------------------------------------------


@pytest.fixture
async def impatient(
    backend: str, make_config: Callable[..., Config], start_vidproxy: Callable[..., Any]
) -> Client:
    return await start_vidproxy(make_config(backend, server={"body_timeout": BODY_TIMEOUT}))


async def test_body_stalling_mid_upload_is_408_and_keeps_the_old_object(
    impatient: Client, raw_connect: Connect, pending_uploads: Pending, wait_until: Wait
) -> None:
    await put(impatient, KEY, OLD)
    connection = await raw_connect(impatient)
    await connection.send_head("PUT", f"/videos/{KEY}", {"Content-Length": str(MULTIPART)})
    await connection.send(payload(PART_SIZE + 100))  # on S3, a multipart upload has begun
    response, waited = await timed_response(connection)
    assert (response.status, response.json()["error"]) == (408, "request_timeout")
    assert waited < BODY_TIMEOUT + QUICK
    await nothing_pending(pending_uploads)
    assert await stored(impatient, KEY) == OLD


@pytest.mark.parametrize("backend", ["fs"])
@pytest.mark.parametrize(
    ("head", "sent"),
    [
        ({"Content-Length": "100"}, b""),
        ({"Transfer-Encoding": "chunked"}, b""),
        ({"Transfer-Encoding": "chunked"}, b"100\r\n" + b"x" * 10),  # stalls inside a chunk
    ],
    ids=["length-no-body", "chunked-no-body", "chunked-mid-chunk"],
)
async def test_body_that_never_comes_is_408(
    impatient: Client, raw_connect: Connect, head: dict[str, str], sent: bytes
) -> None:
    connection = await raw_connect(impatient)
    await connection.send_head("PUT", "/videos/new.mp4", head)
    await connection.send(sent)
    response, waited = await timed_response(connection)
    assert (response.status, response.json()["error"]) == (408, "request_timeout")
    assert waited < BODY_TIMEOUT + QUICK
    assert await stored(impatient, "new.mp4") is None


@pytest.mark.parametrize("backend", ["fs"])
async def test_slow_but_steady_body_outlasting_the_timeout_is_stored(
    impatient: Client, raw_connect: Connect
) -> None:
    # The deadline is per read, not per body: 10 pieces 0.2 s apart take 2 s in all.
    body = payload(10_000, 3)
    connection = await raw_connect(impatient)
    await connection.send_head("PUT", f"/videos/{KEY}", {"Content-Length": str(len(body))})
    started = time.monotonic()
    for start in range(0, len(body), 1000):
        await connection.send(body[start : start + 1000])
        await asyncio.sleep(BODY_TIMEOUT * 0.4)
    assert time.monotonic() - started > 3 * BODY_TIMEOUT
    assert (await connection.response()).status == 201
    assert await stored(impatient, KEY) == body


# ---- server.max_concurrent_uploads ----------------------------------------------------------


@pytest.fixture
async def two_slots(
    make_config: Callable[..., Config], start_vidproxy: Callable[..., Any]
) -> Client:
    config = make_config("fs", server={"max_concurrent_uploads": 2, "body_timeout": 30})
    return await start_vidproxy(config)


async def hold_uploads(
    client: Client, raw_connect: Connect, wait_until: Wait, tmp: Path, n: int
) -> list[RawConnection]:
    """``n`` uploads that have begun (their temp files exist) and wait for more body."""
    held = []
    for i in range(n):
        connection = await raw_connect(client)
        await connection.send_head("PUT", f"/videos/held-{i}.mp4", {"Content-Length": "2000"})
        await connection.send(b"x" * 1000)
        held.append(connection)

    async def begun() -> bool:
        return len(names(tmp)) == n

    await wait_until(begun, f"{n} uploads to begin")
    return held


async def test_upload_past_the_limit_is_503_with_retry_after(
    two_slots: Client, raw_connect: Connect, wait_until: Wait, tmp_path: Path
) -> None:
    await put(two_slots, KEY, OLD)
    held = await hold_uploads(two_slots, raw_connect, wait_until, tmp_path / "data" / "tmp", 2)
    for method, path in (("PUT", "/videos/third.mp4"), ("POST", "/videos"), ("POST", "/upload")):
        response = await two_slots.request(method, path, data=b"third")
        assert response.status == 503
        assert (await response.json())["error"] == "too_many_uploads"
        assert int(response.headers["Retry-After"]) > 0
    # Downloads and listings are not uploads.
    assert await stored(two_slots, KEY) == OLD
    assert (await two_slots.get("/videos")).status == 200
    await held[0].send(b"y" * 1000)
    assert (await held[0].response()).status == 201
    await put(two_slots, "third.mp4", b"third")  # the finished upload freed its slot


async def test_upload_past_the_limit_gets_503_instead_of_100_continue(
    two_slots: Client, raw_connect: Connect, wait_until: Wait, tmp_path: Path
) -> None:
    await hold_uploads(two_slots, raw_connect, wait_until, tmp_path / "data" / "tmp", 2)
    connection = await raw_connect(two_slots)
    head = {"Content-Length": str(PART_SIZE), "Expect": "100-continue"}
    await connection.send_head("PUT", "/videos/third.mp4", head)
    async with asyncio.timeout(QUICK):
        status, headers = await connection.read_head()
    assert (status, "Retry-After" in headers) == (503, True)


async def test_a_client_that_leaves_frees_its_slot(
    two_slots: Client, raw_connect: Connect, wait_until: Wait, tmp_path: Path
) -> None:
    tmp = tmp_path / "data" / "tmp"
    held = await hold_uploads(two_slots, raw_connect, wait_until, tmp, 2)
    await held[1].close()

    async def slot_free() -> bool:
        return (await two_slots.put("/videos/next.mp4", data=b"next")).status == 201

    await wait_until(slot_free, "the slot of the client that left to be free")


async def test_failed_uploads_give_their_slot_back(
    make_config: Callable[..., Config],
    start_vidproxy: Callable[..., Any],
    raw_connect: Connect,
    wait_until: Wait,
) -> None:
    server = {"max_concurrent_uploads": 1, "max_upload_bytes": 1000, "body_timeout": 0.3}
    client = await start_vidproxy(make_config("fs", server=server))
    await put(client, KEY, OLD[:500])

    async def cut_off() -> None:
        connection = await raw_connect(client)
        await connection.send_head("PUT", "/videos/x", {"Content-Length": "900"})
        await connection.send(b"x" * 100)
        await connection.close()

    async def stalled() -> None:
        connection = await raw_connect(client)
        await connection.send_head("PUT", "/videos/x", {"Content-Length": "900"})
        assert (await connection.response()).status == 408

    async def refused(status: int, **headers: str) -> None:
        response = await client.put("/videos/x", data=b"x" * 900, headers=headers)
        assert response.status == status

    async def too_large_chunked() -> None:
        async def pieces() -> AsyncIterator[bytes]:
            for _ in range(20):
                yield b"x" * 100

        assert (await client.put("/videos/x", data=pieces())).status == 413

    failures: list[Callable[[], Awaitable[None]]] = [
        too_large_chunked,
        lambda: refused(400, **{"X-Content-SHA256": "0" * 64}),
        lambda: refused(400, **{"Content-Type": "not a type"}),
        lambda: refused_existing(client),
        stalled,
        cut_off,
    ]
    for fail in failures:
        await fail()

        async def slot_free() -> bool:
            return (await client.put("/videos/ok", data=b"ok")).status == 201

        # A cut-off upload frees its slot a moment after the client left.
        await wait_until(slot_free, f"the slot to be free after {fail}", QUICK)


async def refused_existing(client: Client) -> None:
    response = await client.put(f"/videos/{KEY}", data=b"x", headers={"If-None-Match": "*"})
    assert response.status == 412


# ---- request smuggling and oversized heads ---------------------------------------------------

VICTIM = "victim.mp4"
SMUGGLED = f"DELETE /videos/{VICTIM} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode()
SMUGGLING = {
    "length-and-chunked": b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "chunked-and-length": b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    "two-lengths": b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef",
    "two-equal-lengths": b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nabcde",
    "length-list": b"Content-Length: 5, 6\r\n\r\nabcdef",
    "length-plus": b"Content-Length: +5\r\n\r\nabcde",
    "length-negative": b"Content-Length: -1\r\n\r\n",
    "length-hex": b"Content-Length: 0x5\r\n\r\nabcde",
    "chunked-twice": b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "chunked-then-identity": b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    "not-chunked-last": b"Transfer-Encoding: gzip\r\n\r\nabcde",
    "xchunked": b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "space-before-colon": b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
    "obs-fold": b"Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
    "bad-chunk-size": b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "chunk-size-overflow": b"Transfer-Encoding: chunked\r\n\r\n" + b"f" * 40 + b"\r\nab\r\n",
    "lf-only-chunks": b"Transfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n",
}


async def exchange(port: int, data: bytes) -> tuple[int, bytes, bool]:
    """Send ``data``; the status, everything read, and whether the server closed."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        received = b""
        closed = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(QUICK):
                while chunk := await reader.read(65536):
                    received += chunk
                closed = True
        status = int(received.split(b" ", 2)[1]) if received.startswith(b"HTTP/") else 0
        return status, received, closed
    finally:
        writer.close()


PARSER_MESSAGES = {
    "request line or header line too long",
    "invalid HTTP method",
    "malformed request line",
    "invalid header",
    "malformed HTTP request",
}


def malformed_answer(received: bytes) -> str:
    """Check ``received`` is one JSON 400 ``malformed_request`` that says it closes;
    returns its message."""
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    assert lines[0].split(" ", 2)[1] == "400"
    assert headers["content-type"].startswith("application/json")
    assert headers["connection"].lower() == "close"
    assert len(body) == int(headers["content-length"])  # one answer, nothing after it
    answer = json.loads(body)
    assert set(answer) == {"error", "message"} and answer["error"] == "malformed_request"
    assert answer["message"] in PARSER_MESSAGES
    return str(answer["message"])


@pytest.fixture
async def with_victim(
    make_config: Callable[..., Config], start_vidproxy: Callable[..., Any]
) -> Client:
    client = await start_vidproxy(make_config("fs"))
    await put(client, VICTIM, OLD)
    return client


@pytest.mark.parametrize("case", sorted(SMUGGLING))
async def test_smuggling_shapes_get_400_close_and_run_nothing_smuggled(
    with_victim: Client, case: str
) -> None:
    head = f"PUT /videos/{KEY} HTTP/1.1\r\nHost: x\r\n".encode()
    started = time.monotonic()
    status, received, closed = await exchange(with_victim.port, head + SMUGGLING[case] + SMUGGLED)
    assert status == 400
    malformed_answer(received)
    assert closed and time.monotonic() - started < QUICK
    assert await stored(with_victim, VICTIM) == OLD
    assert await stored(with_victim, KEY) is None


TOO_LONG = "request line or header line too long"
GARBLED_HEADS = [
    pytest.param(
        b"GET /videos/a HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
        TOO_LONG,
        id="long-header",
    ),
    pytest.param(
        b"GET /videos/a HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"a" * 9000 + b"\r\n\r\n",
        TOO_LONG,
        id="long-authorization",
    ),
    pytest.param(
        b"GET /videos/a HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-H%d: v\r\n" % i for i in range(200))
        + b"\r\n",
        "malformed HTTP request",
        id="many-headers",
    ),
    pytest.param(
        b"GET /videos/" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", TOO_LONG, id="long-url"
    ),
    pytest.param(
        b"GET /videos?prefix=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        TOO_LONG,
        id="long-query",
    ),
    pytest.param(
        b"PUT /videos/a HTTP/1.1\nHost: x\nContent-Length: 1\n\nx",
        "malformed request line",
        id="bare-lf",
    ),
    pytest.param(
        b"G<T /videos/a HTTP/1.1\r\nHost: x\r\n\r\n", "invalid HTTP method", id="bad-method"
    ),
    pytest.param(b"hello there\r\n\r\n", "invalid HTTP method", id="garbage-line"),
    pytest.param(
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,
        "invalid HTTP method",
        id="tls-hello",
    ),
    pytest.param(
        b"GET /videos/a HTTP/9.9\r\nHost: x\r\n\r\n", "malformed request line", id="http-9.9"
    ),
]


@pytest.mark.parametrize(("request_bytes", "message"), GARBLED_HEADS)
async def test_oversized_or_garbled_heads_get_a_json_400_quickly_and_close(
    with_victim: Client, request_bytes: bytes, message: str
) -> None:
    started = time.monotonic()
    status, received, closed = await exchange(with_victim.port, request_bytes)
    assert status == 400
    # A fixed text per kind: never the bytes that were sent.
    assert malformed_answer(received) == message
    assert closed and time.monotonic() - started < QUICK
    assert (await with_victim.get("/healthz")).status == 200


async def test_a_key_over_1024_bytes_in_a_url_under_the_line_limit_is_400_json(
    with_victim: Client,
) -> None:
    response = await with_victim.put("/videos/" + "k" * 1025, data=b"x")
    assert (response.status, (await response.json())["error"]) == (400, "invalid_key")


# ---- keys can never leave their directory -------------------------------------------------

HOSTILE_TARGETS = [
    ("PUT", "/videos/../../../../tmp/escaped"),
    ("PUT", "/videos/%2e%2e/%2e%2e/%2e%2e/tmp/escaped"),
    ("PUT", "/videos/a/%2E%2E/%2E%2E/escaped"),
    ("PUT", "/videos/..%2f..%2f..%2fescaped"),
    ("PUT", "/videos/..%5c..%5cescaped"),
    ("PUT", "/videos/%2fetc%2fescaped"),
    ("PUT", "/videos//etc/escaped"),
    ("PUT", "/videos/a%00/../escaped"),
    ("POST", "/upload/../escaped"),
    ("POST", "/upload/..%2f..%2fescaped"),
    ("GET", "/download/..%2f..%2fetc%2fpasswd"),
]
TRICKY_VALID_KEYS = [
    "...",
    "a/.../b",
    "..a/b..",
    "~root/.ssh/authorized_keys",
    "-rf",
    ".hidden",
    "C:/Windows/x",
    "%2e%2e/%2e%2e/escaped",
    "nul",
    "a" * 255 + "/" + "b" * 255,
]
_STORE_FILE = re.compile(r"[0-9a-f]{64}(\.json|\.[0-9A-Z]{26})")


def assert_named_by_digest(root: Path, keys: list[str]) -> None:
    """Every entry under ``root`` is <digest[:2]>/ or <digest[:2]>/<digest>.json|.<ulid>."""
    digests = {key_digest(k) for k in keys}
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if path.is_dir():
            assert re.fullmatch(r"[0-9a-f]{2}", str(relative)), relative
            continue
        assert len(relative.parts) == 2 and _STORE_FILE.fullmatch(relative.name), relative
        digest = relative.name[:64]
        assert relative.parts[0] == digest[:2] and digest in digests, relative


async def test_no_key_reaches_outside_the_data_dir(
    make_config: Callable[..., Config],
    start_vidproxy: Callable[..., Any],
    raw_connect: Connect,
    tmp_path: Path,
) -> None:
    client = await start_vidproxy(make_config("fs"))
    before = set(tmp_path.parent.iterdir())
    for method, target in HOSTILE_TARGETS:
        connection = await raw_connect(client)
        await connection.send_head(method, target, {"Content-Length": "4"})
        await connection.send(b"evil")
        response = await connection.response()
        assert response.status in (400, 404), target
        assert response.json()["error"] in ("invalid_key", "not_found")
    for key in TRICKY_VALID_KEYS:
        await put(client, key, key.encode())
        assert await stored(client, key) == key.encode()
    assert set(tmp_path.parent.iterdir()) == before
    assert names(tmp_path) == ["data"]
    assert names(tmp_path / "data" / "tmp") == []
    assert_named_by_digest(tmp_path / "data" / "objects", TRICKY_VALID_KEYS)


async def test_no_key_reaches_outside_the_cache_dir(
    make_config: Callable[..., Config],
    start_vidproxy: Callable[..., Any],
    tmp_path: Path,
    wait_until: Wait,
) -> None:
    client = await start_vidproxy(make_config("s3"))
    for key in TRICKY_VALID_KEYS:
        await put(client, key, key.encode())
        assert await stored(client, key) == key.encode()  # a cold read fills the cache

    async def all_cached() -> bool:
        metas = list((tmp_path / "cache" / "entries").rglob("*.json"))
        return len(metas) == len(TRICKY_VALID_KEYS)

    await wait_until(all_cached, "every key to be cached")
    assert names(tmp_path) == ["cache"]
    assert_named_by_digest(tmp_path / "cache" / "entries", TRICKY_VALID_KEYS)


# ---- Range syntax ------------------------------------------------------------------------------

SIZE = 10_000
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
async def test_range_garbage_answers_200_206_or_416_quickly(client: Client, header: str) -> None:
    body = payload(SIZE, 4)
    await put(client, "r.bin", body)
    started = time.monotonic()
    response = await client.get("/videos/r.bin", headers={"Range": header})
    got = await response.read()
    assert time.monotonic() - started < QUICK
    status, expected = expected_answer(header, body)
    assert response.status == status, (header, response.status)
    if status == 416:
        assert response.headers["Content-Range"] == f"bytes */{SIZE}"
        assert json.loads(got)["error"] == "range_not_satisfiable"
    else:
        assert got == expected


# ---- nothing echoed in response headers --------------------------------------------------------

MARK = 'vpx<"mark>'
# A download's name: printable ASCII in quotes (no quote, backslash or "%"), then
# the exact name percent-encoded (RFC 5987 attr-chars).
DISPOSITION = (
    r'attachment; filename="[ !#$&-\[\]-~]*"'
    r"(; filename\*=UTF-8''[!#$&+.^_`|~0-9A-Za-z%-]*)?"
)


async def test_no_response_header_echoes_request_input(
    make_config: Callable[..., Config], start_vidproxy: Callable[..., Any]
) -> None:
    client = await start_vidproxy(make_config("fs"))
    key = f"a{MARK}b"
    path = "/videos/" + quote(key, safe="")
    hostile = {
        "Origin": MARK,
        "Referer": MARK,
        "Cookie": f"x={MARK}",
        "Accept-Encoding": MARK,
        "X-Request-Id": MARK,
        "Authorization": f"Bearer {MARK}",
    }
    responses = [
        await client.put(path, data=b"hi", headers=hostile),
        await client.get(path, headers={**hostile, "Range": f"bytes={MARK}"}),
        await client.get(path, headers={"If-None-Match": f'"{MARK}"', "If-Range": MARK}),
        await client.head(path, headers={"If-Modified-Since": MARK}),
        await client.put(path, data=b"x", headers={"Content-Type": f"video/{MARK}"}),
        await client.put(path, data=b"x", headers={"X-Content-SHA256": MARK}),
        await client.put(path, data=b"x", headers={"If-None-Match": MARK}),
        await client.put(path, data=b"x", headers={"Expect": MARK}),
        await client.get("/videos/" + quote(f"missing{MARK}", safe="")),
        await client.get("/videos", params={"prefix": MARK, "after": MARK, "limit": MARK}),
        await client.get("/videos", params={"prefix": MARK}),
        await client.request("PATCH", path, headers=hostile),
        await client.get("/" + quote(MARK), headers=hostile),
        await client.post("/sign", data=f'{{"key": "{key}", "method": "{MARK}"}}'),
    ]
    assert responses[0].status == 201
    for response in responses:
        for name, value in response.headers.items():
            if name == "Location":
                assert re.fullmatch(r"/videos/[A-Za-z0-9%._~/-]+", value), value
            elif name == "Content-Disposition":  # the key's name, quoted and encoded
                assert re.fullmatch(DISPOSITION, value), value
            else:
                assert "vpx" not in value.lower(), (response.url, name, value)
        if response.status >= 400:
            assert response.content_type == "application/json", response.url


# ---- S3's errors, endpoint and credentials stay inside -------------------------------------------

S3_MARK = "s3leakmark"


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (500, "InternalError"),
        (503, "SlowDown"),
        (403, "AccessDenied"),
        (400, "InvalidArgument"),
        (409, f"Odd&lt;{S3_MARK}&gt;"),  # a Code that is no identifier
    ],
)
async def test_s3_error_answers_never_reach_a_client_or_the_log(
    make_config: Callable[..., Config],
    start_vidproxy: Callable[..., Any],
    s3_faults: S3Faults,
    s3: Any,
    bucket: str,
    caplog: pytest.LogCaptureFixture,
    status: int,
    code: str,
) -> None:
    s3.put_object(Bucket=bucket, Key=KEY, Body=OLD)
    failing = {"all": False}

    def rule(request: web.Request) -> web.StreamResponse | None:
        if failing["all"] or is_upload_part(request, 2):
            return s3_error(status, code, S3_MARK)
        return None

    s3_faults.rule = rule
    client = await start_vidproxy(make_config("s3", s3={"endpoint_url": s3_faults.url}))
    caplog.set_level(logging.INFO)
    answers = [await client.put("/videos/multi", data=payload(MULTIPART))]
    failing["all"] = True
    answers += [
        await client.get(f"/videos/{KEY}"),
        await client.get(f"/videos/{KEY}", headers={"Range": "bytes=-5"}),
        await client.head(f"/videos/{KEY}"),
        await client.put("/videos/small", data=b"small"),
        await client.put("/videos/multi", data=payload(MULTIPART)),
        await client.delete(f"/videos/{KEY}"),
        await client.get("/videos"),
        await client.get("/readyz"),
    ]
    endpoint = s3_faults.url.removeprefix("http://")
    for response in answers:
        assert response.status >= 400
        text = await response.text()
        assert response.content_type == "application/json" or response.method == "HEAD"
        for leak in (S3_MARK, "<", "&lt;", endpoint, "testing", "Traceback"):
            assert leak not in text, (response.url, text)
            assert all(leak not in v for v in response.headers.values())
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    for leak in (S3_MARK, "<Error>", endpoint, "testing"):
        assert leak not in logged


async def test_an_unreachable_s3_endpoint_is_never_named(
    make_config: Callable[..., Config],
    start_vidproxy: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    caplog.set_level(logging.INFO)
    client = await start_vidproxy(make_config("s3", s3={"endpoint_url": f"http://{nowhere}"}))
    for response in (
        await client.get(f"/videos/{KEY}"),
        await client.put(f"/videos/{KEY}", data=payload(MULTIPART)),
        await client.get("/readyz"),
    ):
        assert response.status == 503
        assert nowhere not in await response.text()
    logged = "\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    assert nowhere not in logged
