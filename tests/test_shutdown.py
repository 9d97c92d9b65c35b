"""SIGTERM as an orchestrator sends it, to vidproxy running as a real process.

vidproxy stops accepting connections, lets what is in flight finish for up to
``server.shutdown_timeout``, then cancels the rest (a multipart upload is aborted,
a temp file removed) and exits 0. The slow clients here are raw sockets that send
(or read) in pieces on the test's command.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import NO_STALE_UPLOAD_SWEEP_ENV, PART_SIZE
from fault_rig import VidproxyProcess, apoll, payload
from fault_rig import pending_uploads as s3_uploads

KEY = "clip.mp4"
BODY = payload(2 * PART_SIZE + 1000, 21)  # three parts on S3
FIRST = PART_SIZE + 1000  # what the slow client sends before the signal
OLD = payload(3000, 22)
EXIT_WITHIN = 15.0


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def store_env(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    if backend == "fs":
        return {"VIDPROXY_FS_DIR": str(tmp_path / "data")}
    return {
        "VIDPROXY_S3_BUCKET": request.getfixturevalue("bucket"),
        "VIDPROXY_S3_ENDPOINT_URL": request.getfixturevalue("moto_endpoint"),
        "VIDPROXY_S3_ADDRESSING_STYLE": "path",
        "VIDPROXY_S3_PART_SIZE": str(PART_SIZE),
        "VIDPROXY_S3_UPLOAD_CONCURRENCY": "2",
        **NO_STALE_UPLOAD_SWEEP_ENV,
        "VIDPROXY_CACHE_DIR": str(tmp_path / "cache"),
    }


@pytest.fixture
def vidproxy(
    store_env: dict[str, str], vidproxy_process: Callable[..., VidproxyProcess]
) -> Callable[..., VidproxyProcess]:
    """Start vidproxy processes with ``store_env`` plus any ``VIDPROXY_SERVER_*`` given."""

    def start(**server: Any) -> VidproxyProcess:
        return vidproxy_process(store_env, **server)

    return start


@pytest.fixture
def unfinished(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Callable[[], Any]:
    """What the store holds of unfinished uploads (S3 multipart uploads, fs temp files)."""
    if backend == "s3":
        s3, bucket = request.getfixturevalue("s3"), request.getfixturevalue("bucket")
        return lambda: asyncio.to_thread(s3_uploads, s3, bucket)
    tmp = tmp_path / "data" / "tmp"

    async def temp_files() -> list[str]:
        return sorted(p.name for p in tmp.iterdir()) if tmp.is_dir() else []

    return temp_files


class Raw:
    """One client connection driven piece by piece."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Raw:
        return cls(*await asyncio.open_connection("127.0.0.1", port))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def request(self, method: str, path: str, body: bytes = b"", **headers: str) -> None:
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *map(": ".join, headers.items())]
        await self.send("\r\n".join(lines).encode() + b"\r\n\r\n" + body)

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        async with asyncio.timeout(EXIT_WITHIN):
            head = await self.reader.readuntil(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").split("\r\n")
            headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines if x)}
            body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(status_line.split()[1]), headers, body

    async def closed_by_server(self) -> bool:
        try:
            async with asyncio.timeout(EXIT_WITHIN):
                return await self.reader.read(1) == b""
        except ConnectionError:
            return True

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def raw() -> AsyncIterator[Callable[[int], Any]]:
    opened: list[Raw] = []

    async def open_(port: int) -> Raw:
        connection = await Raw.open(port)
        opened.append(connection)
        return connection

    yield open_
    for connection in opened:
        connection.close()


async def refuses_connections(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except (ConnectionRefusedError, ConnectionResetError):
        return True  # reset: it was in the backlog of the listener that just closed
    writer.close()
    return False


async def put_old(process: VidproxyProcess, raw: Callable[[int], Any]) -> None:
    connection = await raw(process.port)
    await connection.request("PUT", f"/videos/{KEY}", OLD, **{"Content-Length": str(len(OLD))})
    assert (await connection.response())[0] == 201


async def stored_after_restart(
    backend: str, tmp_path: Path, store_env: dict[str, str], request: pytest.FixtureRequest
) -> bytes | None:
    if backend == "s3":
        s3, bucket = request.getfixturevalue("s3"), request.getfixturevalue("bucket")
        try:
            return bytes(s3.get_object(Bucket=bucket, Key=KEY)["Body"].read())
        except s3.exceptions.NoSuchKey:
            return None
    process = VidproxyProcess(tmp_path, store_env)
    await asyncio.to_thread(process.start)
    try:
        connection = await Raw.open(process.port)
        await connection.request("GET", f"/videos/{KEY}")
        status, _, body = await connection.response()
        connection.close()
        return body if status == 200 else None
    finally:
        await asyncio.to_thread(process.stop)


async def begin_upload(
    process: VidproxyProcess, raw: Callable[[int], Any], unfinished: Callable[[], Any]
) -> Raw:
    """An upload that has sent its first part and waits for the test to send more."""
    connection = await raw(process.port)
    head = {"Content-Length": str(len(BODY))}
    await connection.request("PUT", f"/videos/{KEY}", BODY[:FIRST], **head)

    async def under_way() -> bool:
        return len(await unfinished()) == 1

    await apoll(under_way, "the upload to be under way", 10)
    return connection


# ---- the tests ---------------------------------------------------------------------------


async def test_sigterm_lets_an_in_flight_upload_finish_and_exits_0(
    vidproxy: Callable[..., VidproxyProcess],
    raw: Callable[[int], Any],
    unfinished: Callable[[], Any],
    backend: str,
    tmp_path: Path,
    store_env: dict[str, str],
    request: pytest.FixtureRequest,
) -> None:
    process = vidproxy(shutdown_timeout=30)
    upload = await begin_upload(process, raw, unfinished)
    process.signal(signal.SIGTERM)
    await apoll(lambda: refuses_connections(process.port), "new connections to be refused", 10)
    await upload.send(BODY[FIRST:])
    status, _, answer = await upload.response()
    assert (status, json.loads(answer)["sha256"]) == (201, sha256(BODY))
    assert await process.await_exit(EXIT_WITHIN) == 0
    log = process.log()
    assert "draining 1 request(s)" in log and "cancelling" not in log and "stopped" in log
    assert await stored_after_restart(backend, tmp_path, store_env, request) == BODY


async def test_sigterm_aborts_an_upload_stuck_past_shutdown_timeout_and_exits_0(
    vidproxy: Callable[..., VidproxyProcess],
    raw: Callable[[int], Any],
    unfinished: Callable[[], Any],
    backend: str,
    tmp_path: Path,
    store_env: dict[str, str],
    request: pytest.FixtureRequest,
) -> None:
    shutdown_timeout = 1.0
    process = vidproxy(shutdown_timeout=shutdown_timeout, body_timeout=60)
    await put_old(process, raw)
    stuck = await begin_upload(process, raw, unfinished)
    signalled = time.monotonic()
    process.signal(signal.SIGTERM)
    assert await process.await_exit(EXIT_WITHIN) == 0
    took = time.monotonic() - signalled
    # Cancelled as soon as shutdown_timeout is up, not after a further grace period.
    assert shutdown_timeout <= took < shutdown_timeout + 3.0, took
    assert await stuck.closed_by_server()
    assert await unfinished() == []  # multipart aborted / temp file removed
    assert "cancelling 1 request(s)" in process.log()
    assert await stored_after_restart(backend, tmp_path, store_env, request) == OLD


@pytest.mark.parametrize("backend", ["fs"])
async def test_sigterm_lets_a_slow_download_finish(
    vidproxy: Callable[..., VidproxyProcess], raw: Callable[[int], Any]
) -> None:
    process = vidproxy(shutdown_timeout=30)
    big = payload(32 * 1024 * 1024, 23)
    uploader = await raw(process.port)
    await uploader.request("PUT", f"/videos/{KEY}", big, **{"Content-Length": str(len(big))})
    assert (await uploader.response())[0] == 201
    reader = await raw(process.port)
    await reader.request("GET", f"/videos/{KEY}")
    head = await reader.reader.readuntil(b"\r\n\r\n")
    first = await reader.reader.readexactly(64 * 1024)
    process.signal(signal.SIGTERM)
    await apoll(lambda: refuses_connections(process.port), "new connections to be refused", 10)
    assert b" 200 " in head.split(b"\r\n")[0]
    rest = await asyncio.wait_for(reader.reader.readexactly(len(big) - len(first)), EXIT_WITHIN)
    assert first + rest == big
    assert await process.await_exit(EXIT_WITHIN) == 0


@pytest.mark.parametrize("backend", ["fs"])
async def test_a_kept_alive_connection_gets_its_answer_and_is_closed_while_draining(
    vidproxy: Callable[..., VidproxyProcess],
    raw: Callable[[int], Any],
    unfinished: Callable[[], Any],
) -> None:
    # A proxy in front (nginx with upstream keepalive) reuses idle connections: once
    # draining, each may carry one more request, answered with Connection: close.
    process = vidproxy(shutdown_timeout=30)
    idle = await raw(process.port)
    await idle.request("GET", "/healthz")
    assert (await idle.response())[0] == 200
    upload = await begin_upload(process, raw, unfinished)  # keeps the process draining
    process.signal(signal.SIGTERM)
    await apoll(lambda: refuses_connections(process.port), "new connections to be refused", 10)
    await idle.request("GET", "/healthz")
    status, headers, _ = await idle.response()
    assert (status, headers.get("connection", "").lower()) == (200, "close")
    assert await idle.closed_by_server()
    await upload.send(BODY[FIRST:])
    assert (await upload.response())[0] == 201
    assert await process.await_exit(EXIT_WITHIN) == 0


@pytest.mark.parametrize("backend", ["fs"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_an_idle_process_exits_0_at_once(
    vidproxy: Callable[..., VidproxyProcess], sig: int
) -> None:
    process = vidproxy()
    signalled = time.monotonic()
    process.signal(sig)
    assert await process.await_exit(EXIT_WITHIN) == 0
    assert time.monotonic() - signalled < 3.0
    assert process.log().rstrip().endswith("stopped")
