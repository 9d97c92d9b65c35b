"""Slowloris and the connection bound, against vidproxy as a real process.

A request head must arrive whole within ``server.header_timeout`` (the first from
the connection's start, a later one from its first byte); past
``server.max_connections`` (by default what RLIMIT_NOFILE leaves room for) a new
connection takes the place of the one that has waited longest for a head; when
accept(2) runs out of descriptors anyway, the log gets one line a minute, not a
traceback per attempt. The stalled clients are raw sockets.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import RawConnection
from fault_rig import VidproxyProcess, http_status, payload

from vidproxy.logs import Throttled
from vidproxy.web.limits import ConnectionSlots, connection_limit
from vidproxy.web.protocol import JsonErrorHandler

HEADER_TIMEOUT = 1.0
MARGIN = 3.0  # seconds a close may come after its deadline on a loaded machine
STALLED = {
    "nothing": b"",
    "request-line": b"GET /healthz HTTP/1.1\r\n",
    "some-headers": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: 1\r\n",
    "upload-head": b"PUT /videos/a.mp4 HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n",
}
# A head sent one byte at a time, each within any per-read timeout: only a
# deadline for the whole head stops it.
DRIP = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: 1\r\n" * 100
DRIP_INTERVAL = 0.05
KEEPALIVE_TIMEOUT = 2.0
BIG = 32 * 1024 * 1024  # a download more than socket buffers hold
SMALL_LOG_BYTES = 8 * 1024
SMALL_LOG_LINES = 30

Start = Callable[..., VidproxyProcess]


@pytest.fixture
def vidproxy(tmp_path: Path, vidproxy_process: Start) -> Start:
    """Start fs-backed vidproxy processes with ``VIDPROXY_SERVER_*`` settings."""

    def start(open_files: int | None = None, **server: Any) -> VidproxyProcess:
        return vidproxy_process({"VIDPROXY_FS_DIR": str(tmp_path / "data")}, open_files, **server)

    return start


@pytest.fixture
async def connect() -> AsyncIterator[Callable[[int], Any]]:
    opened: list[RawConnection] = []

    async def open_(port: int) -> RawConnection:
        connection = RawConnection(*await asyncio.open_connection("127.0.0.1", port))
        opened.append(connection)
        return connection

    yield open_
    for connection in opened:
        await connection.close()


async def healthz(process: VidproxyProcess) -> int | None:
    return await asyncio.to_thread(http_status, process.url + "/healthz", "GET", 5.0)


def put_status(url: str, body: bytes) -> int:
    request = urllib.request.Request(url, data=body, method="PUT")
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(response.status)


async def closed_after(connection: RawConnection) -> tuple[bytes | None, float]:
    started = time.monotonic()
    received = await connection.read_until_closed(HEADER_TIMEOUT + MARGIN)
    return received, time.monotonic() - started


def assert_timed_out_answer(received: bytes) -> None:
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), received
    assert b"connection: close" in head.lower()
    assert json.loads(body)["error"] == "request_timeout"


def assert_log_small(process: VidproxyProcess) -> None:
    text = process.log()
    assert "Traceback" not in text
    assert len(text.encode()) < SMALL_LOG_BYTES and len(text.splitlines()) < SMALL_LOG_LINES, text


async def drip(connection: RawConnection, data: bytes) -> None:
    try:
        for i in range(len(data)):
            await connection.send(data[i : i + 1])
            await asyncio.sleep(DRIP_INTERVAL)
    except ConnectionError:
        pass  # the server closed it: what the test waits for


# ---- server.header_timeout --------------------------------------------------------------


async def test_half_sent_heads_are_closed_within_the_header_timeout(
    vidproxy: Start, connect: Callable[[int], Any]
) -> None:
    process = await asyncio.to_thread(vidproxy, header_timeout=HEADER_TIMEOUT)
    shapes = [name for name in STALLED for _ in range(20)]
    connections = [await connect(process.port) for _ in shapes]
    for name, connection in zip(shapes, connections, strict=True):
        await connection.send(STALLED[name])
    dripping = await connect(process.port)
    dripper = asyncio.create_task(drip(dripping, DRIP))
    results = await asyncio.gather(*map(closed_after, [*connections, dripping]))
    dripper.cancel()
    for name, (received, took) in zip([*shapes, "drip"], results, strict=True):
        assert received is not None, f"{name}: still open {HEADER_TIMEOUT + MARGIN} s on"
        assert took >= HEADER_TIMEOUT * 0.9, f"{name}: closed before its deadline"
        if name == "nothing":
            assert received == b""  # never asked anything: nothing to answer
        else:
            assert_timed_out_answer(received)
    assert await healthz(process) == 200


async def test_a_later_head_on_a_kept_alive_connection_has_the_deadline_too(
    vidproxy: Start, connect: Callable[[int], Any]
) -> None:
    process = await asyncio.to_thread(vidproxy, header_timeout=HEADER_TIMEOUT)
    connection = await connect(process.port)
    await connection.send_head("GET", "/healthz", {})
    assert (await connection.response()).status == 200
    await connection.send(STALLED["some-headers"])
    received, took = await closed_after(connection)
    assert received is not None and took >= HEADER_TIMEOUT * 0.9
    assert_timed_out_answer(received)


async def test_a_pipelined_head_gets_its_deadline_once_the_answer_before_it_is_out(
    vidproxy: Start, connect: Callable[[int], Any]
) -> None:
    process = await asyncio.to_thread(vidproxy, header_timeout=HEADER_TIMEOUT)
    body = payload(BIG, 5)
    status = await asyncio.to_thread(put_status, process.url + "/videos/big.mp4", body)
    assert status == 201
    connection = await connect(process.port)
    await connection.send_head("GET", "/videos/big.mp4", {})
    # Unread, the download keeps its handler busy past the deadline; the partial
    # head behind it comes while the connection is busy, in a read of its own.
    await asyncio.sleep(HEADER_TIMEOUT / 2)
    await connection.send(STALLED["request-line"])
    await asyncio.sleep(2 * HEADER_TIMEOUT)
    # The answer is far larger than socket buffers: its last byte leaves the server
    # only after this client starts reading, so the head's deadline cannot end
    # before HEADER_TIMEOUT from here, however late this (loaded) client reads.
    reading_from = time.monotonic()
    response = await connection.response()
    assert (response.status, response.body == body) == (200, True)
    received, _ = await closed_after(connection)
    assert received is not None and time.monotonic() - reading_from >= HEADER_TIMEOUT
    assert_timed_out_answer(received)


async def test_a_head_in_the_same_read_as_the_request_before_it_waits_keepalive_timeout(
    vidproxy: Start, connect: Callable[[int], Any]
) -> None:
    # Where a read ends one request and starts the next, aiohttp's parser does not
    # tell that part of a head is buffered: keepalive_timeout closes it instead.
    process = await asyncio.to_thread(
        vidproxy, header_timeout=HEADER_TIMEOUT, keepalive_timeout=KEEPALIVE_TIMEOUT
    )
    connection = await connect(process.port)
    await connection.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + STALLED["request-line"])
    assert (await connection.response()).status == 200
    started = time.monotonic()
    assert await connection.read_until_closed(KEEPALIVE_TIMEOUT + MARGIN) is not None
    assert time.monotonic() - started < KEEPALIVE_TIMEOUT + MARGIN


async def test_an_idle_kept_alive_connection_outlives_the_header_timeout(
    vidproxy: Start, connect: Callable[[int], Any]
) -> None:
    process = await asyncio.to_thread(vidproxy, header_timeout=HEADER_TIMEOUT)
    connection = await connect(process.port)
    await connection.send_head("GET", "/healthz", {})
    assert (await connection.response()).status == 200
    # Idle is keepalive_timeout's business (75 s), not the head deadline's.
    assert await connection.read_until_closed(3 * HEADER_TIMEOUT) is None
    await connection.send_head("GET", "/healthz", {})
    assert (await connection.response()).status == 200


async def test_a_slow_head_inside_the_deadline_then_a_slower_body_is_stored(
    vidproxy: Start, connect: Callable[[int], Any]
) -> None:
    process = await asyncio.to_thread(vidproxy, header_timeout=HEADER_TIMEOUT)
    body = payload(10_000, 6)
    head = f"PUT /videos/b.mp4 HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    connection = await connect(process.port)
    for i in range(0, len(head), 10):  # about half the deadline
        await connection.send(head[i : i + 10].encode())
        await asyncio.sleep(HEADER_TIMEOUT / 2 / (len(head) / 10))
    started = time.monotonic()
    for i in range(0, len(body), 1000):  # the body has only body_timeout per read
        await connection.send(body[i : i + 1000])
        await asyncio.sleep(HEADER_TIMEOUT / 4)
    assert time.monotonic() - started > 2 * HEADER_TIMEOUT
    assert (await connection.response()).status == 201
    stored = await asyncio.to_thread(http_status, process.url + "/videos/b.mp4")
    assert stored == 200


# ---- server.max_connections and RLIMIT_NOFILE -----------------------------------------


async def open_stalled(port: int, count: int, connect: Callable[[int], Any]) -> list[Any]:
    connections = []
    for _ in range(count):
        connection = await connect(port)
        await connection.send(STALLED["some-headers"])
        connections.append(connection)
    return connections


async def test_more_stalled_connections_than_descriptors_leave_healthz_answering(
    vidproxy: Start, connect: Callable[[int], Any]
) -> None:
    open_files = 256  # derived bound: (256 - 64 reserved) / 2 = 96 connections
    process = await asyncio.to_thread(vidproxy, open_files, header_timeout=600)
    stalled = await open_stalled(process.port, 400, connect)
    assert [await healthz(process) for _ in range(3)] == [200, 200, 200]
    # The ones that waited longest made room; the newest still wait for their deadline.
    assert await stalled[0].read_until_closed(MARGIN) == b""
    assert await stalled[-1].read_until_closed(0.2) is None
    assert "(at most 96 connections)" in process.log()
    assert_log_small(process)


async def test_out_of_descriptors_logs_one_line_and_healthz_still_answers(
    vidproxy: Start, connect: Callable[[int], Any]
) -> None:
    # A bound set above what the descriptors allow: accept(2) itself fails (EMFILE).
    process = await asyncio.to_thread(vidproxy, 128, max_connections=10_000, header_timeout=600)
    await open_stalled(process.port, 200, connect)
    assert [await healthz(process) for _ in range(3)] == [200, 200, 200]
    log_text = process.log()
    assert log_text.count("cannot accept connections: out of descriptors") == 1, log_text
    assert "server.max_connections = 10000 needs about" in log_text
    assert_log_small(process)


async def test_when_every_connection_is_busy_a_new_one_gets_503(
    vidproxy: Start, connect: Callable[[int], Any]
) -> None:
    process = await asyncio.to_thread(vidproxy, max_connections=2, body_timeout=30)
    body = payload(1000, 7)
    uploads = [await connect(process.port) for _ in range(2)]
    for upload in uploads:
        head = {"Content-Length": str(len(body)), "Expect": "100-continue"}
        await upload.send_head("PUT", "/videos/c.mp4", head)
        assert (await upload.read_head())[0] == 100  # its head is parsed: it is busy
        await upload.send(body[:10])  # in the handler, waiting for the rest
    refused = await connect(process.port)
    received = await refused.read_until_closed()
    assert received is not None and received.startswith(b"HTTP/1.1 503 ")
    head, _, answer = received.partition(b"\r\n\r\n")
    assert b"Retry-After: " in head
    assert json.loads(answer)["error"] == "too_many_connections"
    await uploads[0].send(body[10:])
    assert (await uploads[0].response()).status == 201
    # That connection now idles between requests: a newcomer may take its place.
    assert await healthz(process) == 200


# ---- the pieces, without a process -------------------------------------------------------


class Conn:
    def __init__(self) -> None:
        self.evicted = False

    def evict(self) -> None:
        self.evicted = True


def test_the_bound_evicts_the_longest_waiting_and_refuses_when_all_are_busy() -> None:
    slots = ConnectionSlots(3)
    a, b, c, d, e = (Conn() for _ in range(5))
    for conn in (a, b, c):
        assert slots.admit(conn)
    slots.busy(a)
    slots.busy(b)
    slots.waiting(a)  # answered: waits for its next head, newer than c's wait
    assert slots.admit(d)
    assert (c.evicted, a.evicted, slots.count) == (True, False, 3)
    slots.busy(d)
    assert slots.admit(e) and a.evicted
    slots.busy(e)
    assert not slots.admit(Conn())  # b, d and e are all handling requests
    slots.closed(b)
    assert slots.admit(Conn()) and slots.count == 3


def test_the_derived_bound_leaves_room_for_the_s3_pool_and_files() -> None:
    assert connection_limit(1024, 0) == (1024 - 64) // 2
    assert connection_limit(1024, 64) == (1024 - 128) // 2
    assert connection_limit(50, 64) == 8  # never below a handful
    assert connection_limit(-1, 64) > 500_000  # unlimited: Linux's own ceiling


def test_a_throttled_warning_goes_out_once_per_interval_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    throttled = Throttled(logging.getLogger("t"), "out of x", 60.0, lambda: now[0])
    with caplog.at_level(logging.WARNING, "t"):
        for t in (0.0, 1.0, 2.0, 59.0, 61.0, 62.0):
            now[0] = t
            throttled.hit("EMFILE")
    assert [r.getMessage() for r in caplog.records] == [
        "out of x (EMFILE; 1 since the last such warning)",
        "out of x (EMFILE; 4 since the last such warning)",
    ]


async def test_aiohttp_internals_that_protocol_py_relies_on_are_unchanged() -> None:
    # protocol.py was checked against aiohttp 3.14.5: data_received appends every
    # parsed head, with its body's StreamReader, to _messages before it returns.
    server = web.Server(lambda request: web.Response())
    handler = web.RequestHandler(server, loop=asyncio.get_running_loop())
    handler.data_received(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nPUT /v HTTP/1.1\r\nHost")
    assert len(handler._messages) == 1
    message, body = handler._messages[-1]
    assert message.path == "/" and body.is_eof()
    handler.data_received(b": x\r\nContent-Length: 3\r\n\r\nab")
    assert len(handler._messages) == 2 and not handler._messages[-1][1].is_eof()
    assert isinstance(server._kwargs, dict) and server._loop is asyncio.get_running_loop()
    hooks = ("connection_made", "data_received", "log_access", "connection_lost")
    for name in hooks:
        assert getattr(web.RequestHandler, name) is not getattr(JsonErrorHandler, name)
    params = list(inspect.signature(web.RequestHandler.log_access).parameters)
    assert params == ["self", "request", "response", "time"]
