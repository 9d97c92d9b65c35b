"""tus uploads across vidproxy processes, driven by tuspy: ``kill -9`` mid-PATCH
and a restart, and two processes on one bucket (start on one, finish on the
other; two PATCHes racing through both); ``kill -9`` while a checksummed PATCH
promotes its staged parts (raw HTTP, S3 held by the fault proxy). Bytes and
X-Content-SHA256 compared."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest
from fault_rig import (
    S3Faults,
    VidproxyProcess,
    apoll,
    is_upload_part,
    payload,
    poll,
    running,
    s3_faults_fixture,  # noqa: F401
)
from rclone_rig import boto3_client, new_bucket, rclone_endpoint_fixture  # noqa: F401
from rigs.tus import checksum_header, create, patch
from tcp_proxy import tcp_proxy
from tusclient import client as tus_client

from vidproxy.units import MiB

SIZE = 17 * MiB + 4321  # three 5 MiB parts and a tail
CHUNK = 64 * MiB  # tuspy sends the rest of the file in one PATCH
PART = 5 * MiB


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tus") / "video.bin"
    block = hashlib.sha256(b"tus processes").digest() * 4096
    path.write_bytes((block * (SIZE // len(block) + 1))[:SIZE])
    return path


@pytest.fixture(params=["fs", "moto", "rclone"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def env_for(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The settings every process of one test shares: the same bucket (or dir)."""
    env = {
        "VIDPROXY_FS_DIR": str(tmp_path / "data"),
        "VIDPROXY_S3_PART_SIZE": "5MiB",
        "VIDPROXY_S3_ABORT_STALE_UPLOADS_AFTER": "0",
    }
    if backend == "fs":
        return env
    endpoint = request.getfixturevalue("moto_endpoint" if backend == "moto" else "rclone_endpoint")
    env.update(
        VIDPROXY_S3_ENDPOINT_URL=endpoint,
        VIDPROXY_S3_BUCKET=new_bucket(boto3_client(endpoint)),
        VIDPROXY_S3_ADDRESSING_STYLE="path",
    )
    return env


@pytest.fixture
def start(tmp_path: Path, env_for: dict[str, str]) -> Iterator[Callable[..., VidproxyProcess]]:
    started: list[VidproxyProcess] = []

    def start_one(port: int | None = None, name: str = "a") -> VidproxyProcess:
        workdir = tmp_path / name
        workdir.mkdir(exist_ok=True)
        env = {**env_for, "VIDPROXY_CACHE_DIR": str(workdir / "cache")}
        if port is not None:
            env["VIDPROXY_SERVER_PORT"] = str(port)
        process = VidproxyProcess(workdir, env)
        started.append(process)
        return process.start()

    yield start_one
    for process in started:
        process.kill()


def offset_of(url: str) -> int:
    request = urllib.request.Request(url, method="HEAD", headers={"Tus-Resumable": "1.0.0"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(response.headers["Upload-Offset"])


def uploader(base: str, path: Path, key: str, **options: Any) -> Any:
    client = tus_client.TusClient(base + "/uploads")
    return client.uploader(file_path=str(path), metadata={"key": key}, **options)


def assert_stored(base: str, key: str, path: Path) -> None:
    with urllib.request.urlopen(f"{base}/videos/{key}", timeout=60) as response:
        body, sha256 = response.read(), response.headers.get("X-Content-SHA256")
    expected = path.read_bytes()
    assert body == expected
    assert sha256 == hashlib.sha256(expected).hexdigest()


def upload_in_background(up: Any) -> threading.Thread:
    def run() -> None:
        with contextlib.suppress(Exception):  # the server is killed under it on purpose
            up.upload()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_kill_9_mid_patch_then_restart_and_resume(
    start: Callable[..., VidproxyProcess], video: Path
) -> None:
    first = start()
    with tcp_proxy(first.port) as proxy:
        up = uploader(proxy.url, video, "killed.bin", chunk_size=CHUNK)
        up.set_url(up.create_url())
        location = urlsplit(up.url).path
        # Hold the PATCH once 11 MiB of it went through: two 5 MiB parts stored on
        # S3, two 4 MiB writes fsynced on fs.
        proxy.pause_after = proxy.sent + 11 * MiB
        thread = upload_in_background(up)
        poll(proxy.paused.is_set, "the PATCH held mid-body", 30)
        poll(lambda: offset_of(first.url + location) >= 8 * MiB, "8 MiB durable", 30)
        first.kill()  # SIGKILL: nothing gets to run
        proxy.release()
        thread.join(30)
    second = start(port=first.port)
    offset = offset_of(second.url + location)
    assert 8 * MiB <= offset <= 11 * MiB
    resumed = uploader(second.url, video, "killed.bin", chunk_size=CHUNK, url=second.url + location)
    assert resumed.offset == offset
    resumed.upload()
    assert_stored(second.url, "killed.bin", video)


def test_two_processes_start_on_one_and_finish_on_the_other(
    start: Callable[..., VidproxyProcess], video: Path, backend: str
) -> None:
    if backend == "fs":
        pytest.skip("an fs store belongs to one process")
    one, other = start(name="one"), start(name="other")
    up = uploader(one.url, video, "shared.bin", chunk_size=3 * MiB)
    for _ in range(3):
        up.upload_chunk()  # 9 MiB through the first process: a part and a tail
    location = urlsplit(up.url).path
    assert offset_of(other.url + location) == 9 * MiB
    rest = uploader(other.url, video, "shared.bin", chunk_size=CHUNK, url=other.url + location)
    rest.upload()
    assert_stored(other.url, "shared.bin", video)
    assert_stored(one.url, "shared.bin", video)


async def test_two_patches_racing_through_two_processes_are_not_both_accepted(
    start: Callable[..., VidproxyProcess], video: Path, backend: str
) -> None:
    if backend != "moto":
        pytest.skip("needs a backend that honours If-Match (rclone ignores it; fs is one process)")
    one, other = start(name="one"), start(name="other")
    body = await asyncio.to_thread(video.read_bytes)
    up = uploader(one.url, video, "raced.bin", chunk_size=CHUNK)
    location = urlsplit(up.create_url()).path
    # A PATCH of the whole body through the first process, held after 6 MiB:
    # its first part is stored and saved in the record.
    reader, writer = await asyncio.open_connection("127.0.0.1", one.port)
    head = (
        f"PATCH {location} HTTP/1.1\r\nHost: x\r\nTus-Resumable: 1.0.0\r\n"
        f"Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body[: 6 * MiB])
    await writer.drain()
    offset = 5 * MiB
    await apoll(lambda: _offset_is(other.url + location, offset), "part 1 durable", 30)
    # The second process takes over from the durable offset and finishes.
    request = urllib.request.Request(
        other.url + location, data=body[offset:], method="PATCH",
        headers={"Tus-Resumable": "1.0.0", "Upload-Offset": str(offset),
                 "Content-Type": "application/offset+octet-stream"},
    )  # fmt: skip
    with await asyncio.to_thread(urllib.request.urlopen, request, timeout=60) as response:
        assert response.status == 204
    writer.write(body[6 * MiB :])
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 60)
    writer.close()
    assert int(status_line.split()[1]) in (409, 423), status_line
    assert_stored(other.url, "raced.bin", video)


async def _offset_is(url: str, offset: int) -> bool:
    return await asyncio.to_thread(offset_of, url) == offset


async def test_kill_9_while_a_checksummed_patch_promotes_its_parts_then_resume(
    s3_faults: S3Faults, moto_endpoint: str, tmp_path: Path
) -> None:
    # A PATCH with Upload-Checksum stages its parts, then promotes them one by
    # one once the body matched. Held as the second goes out, the first is
    # promised (in the record); a crash there must keep that promise and no more.
    env = {
        "VIDPROXY_S3_ENDPOINT_URL": s3_faults.url,
        "VIDPROXY_S3_BUCKET": new_bucket(boto3_client(moto_endpoint)),
        "VIDPROXY_S3_ADDRESSING_STYLE": "path",
        "VIDPROXY_S3_PART_SIZE": "5MiB",
        "VIDPROXY_S3_ABORT_STALE_UPLOADS_AFTER": "0",
        "VIDPROXY_CACHE_DIR": str(tmp_path / "cache"),
    }
    body = payload(2 * PART + 1000, seed=7)
    sha256 = hashlib.sha256(body).hexdigest()
    s3_faults.stall = lambda request: is_upload_part(request, 2)
    async with (
        running(VidproxyProcess(tmp_path, env)) as first,
        aiohttp.ClientSession(base_url=first.url) as session,
    ):
        location = await create(session, len(body), key="promoted.bin")
        checked = checksum_header("sha256", body)
        patching = asyncio.ensure_future(patch(session, location, 0, body, **checked))
        await apoll(lambda: s3_faults.stalled, "the second part's promotion held", 30)
        assert await _offset_is(first.url + location, PART)
        first.kill()
        with contextlib.suppress(aiohttp.ClientError):
            await patching
    s3_faults.stall = None
    async with (
        running(VidproxyProcess(tmp_path, env)) as second,
        aiohttp.ClientSession(base_url=second.url) as session,
    ):
        assert await _offset_is(second.url + location, PART)
        rest = body[PART:]
        answer = await patch(session, location, PART, rest, **checksum_header("sha256", rest))
        assert (answer.status, answer.headers.get("X-Content-SHA256")) == (204, sha256)
        async with session.get("/videos/promoted.bin") as response:
            assert await response.read() == body
            assert response.headers["X-Content-SHA256"] == sha256
