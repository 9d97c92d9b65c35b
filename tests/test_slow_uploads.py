"""Trickling uploads, on fs and on S3 (moto), over real sockets.

Past ``server.upload_rate_grace``, an upload averaging less than
``server.min_upload_rate`` bytes a second (of the time spent waiting on the
client) gets ``408`` and leaves nothing behind: no temp file, no multipart
upload, the old object intact. However slow it is, an upload holds memory only
for the bytes that arrived: part and write buffers are lazy mappings whose
pages exist once written (VmRSS of a vidproxy process shows it).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from conftest import NO_STALE_UPLOAD_SWEEP_ENV, PART_SIZE, Connect, RawConnection
from fault_rig import VidproxyProcess, payload
from rigs.objects import nothing_pending, put, stored

from vidproxy.config import Config

Client = TestClient[Any, Any]
Pending = Callable[[], Awaitable[list[str]]]
Wait = Callable[..., Awaitable[None]]

KEY = "clip.mp4"
OLD = payload(3000, 31)
MiB = 1024 * 1024
MIN_RATE = 4 * MiB  # bytes/s: a fast first part buys about 1.25 s of trickling
GRACE = 1.0
TRICKLE_BYTES = 100
TRICKLE_INTERVAL = 0.1  # 1 KB/s, as the attack
DECLARED = 100 * MiB
TRICKLERS = 32
SENT_EACH = 64 * 1024
# Per trickler: its 64 KiB, aiohttp's read buffer and the connection's objects.
# A buffer allocated whole (4 MiB on fs, one part on S3) is far above it.
RSS_PER_TRICKLER = 1 * MiB
RSS_SAMPLE_SECONDS = 1.0
RSS_SAMPLE_INTERVAL = 0.05


async def trickle(connection: RawConnection) -> None:
    with contextlib.suppress(ConnectionError):
        while True:
            await connection.send(b"t" * TRICKLE_BYTES)
            await asyncio.sleep(TRICKLE_INTERVAL)


@pytest.fixture
async def strict(
    backend: str, make_config: Callable[..., Config], start_vidproxy: Callable[..., Any]
) -> Client:
    server = {"min_upload_rate": MIN_RATE, "upload_rate_grace": GRACE}
    return await start_vidproxy(make_config(backend, server=server))


async def test_a_trickling_upload_gets_408_after_the_grace_and_leaves_nothing(
    strict: Client, raw_connect: Connect, pending_uploads: Pending, wait_until: Wait
) -> None:
    await put(strict, KEY, OLD)
    connection = await raw_connect(strict)
    await connection.send_head("PUT", f"/videos/{KEY}", {"Content-Length": str(DECLARED)})
    started = time.monotonic()
    # A whole first part at once: on S3 a multipart upload begins, on fs a temp file.
    await connection.send(payload(PART_SIZE + 1000, 32))

    async def upload_pending() -> bool:
        return bool(await pending_uploads())

    await wait_until(upload_pending, "the upload to reach the store")
    trickler = asyncio.create_task(trickle(connection))
    try:
        response = await connection.response()
    finally:
        trickler.cancel()
    took = time.monotonic() - started
    assert (response.status, response.json()["error"]) == (408, "request_timeout")
    assert "server.min_upload_rate" in response.json()["message"]
    assert took >= GRACE

    await nothing_pending(
        pending_uploads, what="the multipart upload aborted / the temp file removed"
    )
    assert await stored(strict, KEY) == OLD


async def test_an_upload_above_the_minimum_rate_outlasts_the_grace(
    make_config: Callable[..., Config], start_vidproxy: Callable[..., Any], raw_connect: Connect
) -> None:
    client = await start_vidproxy(
        make_config("fs", server={"min_upload_rate": 64 * 1024, "upload_rate_grace": 0.2})
    )
    body = payload(200_000, 33)  # 20 pieces 0.05 s apart: about 200 KB/s for a second
    connection = await raw_connect(client)
    await connection.send_head("PUT", f"/videos/{KEY}", {"Content-Length": str(len(body))})
    for start in range(0, len(body), 10_000):
        await connection.send(body[start : start + 10_000])
        await asyncio.sleep(0.05)
    assert (await connection.response()).status == 201
    assert await stored(client, KEY) == body


# ---- memory: N tricklers on a vidproxy process ----------------------------------------


@pytest.fixture
def store_env(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    env = {"VIDPROXY_SERVER_MIN_UPLOAD_RATE": "0"}  # they may trickle as long as they like
    if backend == "fs":
        return {**env, "VIDPROXY_FS_DIR": str(tmp_path / "data")}
    return {
        **env,
        "VIDPROXY_S3_BUCKET": request.getfixturevalue("bucket"),
        "VIDPROXY_S3_ENDPOINT_URL": request.getfixturevalue("moto_endpoint"),
        "VIDPROXY_S3_ADDRESSING_STYLE": "path",
        "VIDPROXY_S3_PART_SIZE": str(PART_SIZE),
        "VIDPROXY_CACHE_DIR": str(tmp_path / "cache"),
        **NO_STALE_UPLOAD_SWEEP_ENV,
    }


@pytest.fixture
async def process(tmp_path: Path, store_env: dict[str, str]) -> AsyncIterator[VidproxyProcess]:
    started = VidproxyProcess(tmp_path, store_env)
    await asyncio.to_thread(started.start)
    try:
        yield started
    finally:
        await asyncio.to_thread(started.stop)


def uploads_in_flight(url: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    line = next(x for x in text.splitlines() if x.startswith("vidproxy_uploads_in_flight "))
    return float(line.split()[1])


def warm_up(url: str) -> None:
    """One whole upload and the metrics page, so what they load is in the baseline."""
    body = payload(SENT_EACH, 34)
    request = urllib.request.Request(url + "/videos/warm.mp4", data=body, method="PUT")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 201
    uploads_in_flight(url)


async def test_trickling_uploads_hold_memory_for_what_they_sent_only(
    process: VidproxyProcess, wait_until: Wait
) -> None:
    await asyncio.to_thread(warm_up, process.url)
    baseline = process.rss_bytes()
    connections = []
    for n in range(TRICKLERS):
        reader, writer = await asyncio.open_connection("127.0.0.1", process.port)
        connection = RawConnection(reader, writer)
        connections.append(connection)
        head = {"Content-Length": str(DECLARED), "Content-Type": "video/mp4"}
        await connection.send_head("PUT", f"/videos/t{n}.mp4", head)
        await connection.send(payload(SENT_EACH, n))

    async def all_in_flight() -> bool:
        return await asyncio.to_thread(uploads_in_flight, process.url) == TRICKLERS

    try:
        await wait_until(all_in_flight, f"{TRICKLERS} uploads in flight", within=20.0)
        # Buffers are made as an upload starts; watch long enough to see them.
        peak = baseline
        deadline = time.monotonic() + RSS_SAMPLE_SECONDS
        while time.monotonic() < deadline:
            peak = max(peak, process.rss_bytes())
            await asyncio.sleep(RSS_SAMPLE_INTERVAL)
    finally:
        for connection in connections:
            await connection.close()
    growth = peak - baseline
    assert growth < TRICKLERS * RSS_PER_TRICKLER, f"{growth / MiB:.1f} MiB for {TRICKLERS}"
