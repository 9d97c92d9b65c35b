"""vidproxy with its disk cache, talking to moto through the counting proxy.

``cache_rig`` starts nothing by itself: a test uploads objects straight to moto
(``upload``, not counted), starts vidproxy with the cache settings it needs
(``start``), talks HTTP to it, and reads the proxy's counts.

For the cache's bounds: ``slow_readers`` opens GETs whose client stops reading
(so the entry or fill they read stays in use), ``DiskSampler`` records the
bytes under a directory (those unlinked but still open included) or a
filesystem's free space while a test runs, and ``tmpfs`` mounts small
filesystems (skipped where mounting is not allowed).

A test module gets the fixtures by importing them::

    from cache_rig import cache_rig_fixture  # noqa: F401
    from s3_proxy import s3_proxy_fixture  # noqa: F401
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import socket
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from conftest import RawConnection
from multidict import CIMultiDict, CIMultiDictProxy
from rigs.polling import apoll as wait_for  # the name the cache tests import
from s3_proxy import S3Proxy

from vidproxy.cache import Clock
from vidproxy.config import Config
from vidproxy.units import KiB

CONTENT_TYPE = "video/mp4"
# Bound on one request: a body cut short of its Content-Length would otherwise
# keep the client waiting for the rest forever.
FETCH_TIMEOUT = 15.0
# A test that fails with a held S3 response ends in seconds, not after botocore's 60.
S3_READ_TIMEOUT = 10.0


def random_bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


@dataclass
class Fetched:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def x_cache(self) -> str | None:
        return self.headers.get("X-Cache")


async def fetch(
    client: TestClient[Any, Any], key: str, method: str = "GET", **headers: str
) -> Fetched:
    """One request for ``/videos/{key}``, body read in full."""
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
    async with client.request(
        method, f"/videos/{key}", headers=headers, timeout=timeout
    ) as response:
        body = await response.read()
    return Fetched(response.status, response.headers, body)


async def wait_for_hit(client: TestClient[Any, Any], key: str) -> None:
    """Poll with HEAD (which never starts a fill) until ``key`` is served from disk.

    A HEAD that hits counts as an access, like any hit."""

    async def hit() -> bool:
        return (await fetch(client, key, "HEAD")).x_cache == "HIT"

    await wait_for(hit, f"{key} served from the cache (X-Cache: HIT)")


@dataclass
class CacheRig:
    proxy: S3Proxy
    bucket: str
    s3: Any  # boto3 client straight to moto: writes "behind vidproxy's back"
    cache_dir: Path
    _make_config: Callable[..., Config]
    _start: Callable[..., Any]

    async def start(
        self, s3: dict[str, Any] | None = None, clock: Clock | None = None, **cache: Any
    ) -> TestClient[Any, Any]:
        """vidproxy on S3 through the proxy, its cache in ``cache_dir``; ``clock``
        (a ``manual_clock.ManualClock``) for tests of idle expiry and revalidation."""
        settings = {"dir": str(self.cache_dir), "min_free_bytes": 0, **cache}
        s3 = {"endpoint_url": self.proxy.url, "read_timeout": S3_READ_TIMEOUT, **(s3 or {})}
        config = self._make_config("s3", cache=settings, s3=s3)
        return await self._start(config, clock=clock)

    async def upload(self, key: str, body: bytes, **metadata: str) -> str:
        """Put ``body`` under ``key`` directly in moto; returns the ETag."""
        response = await asyncio.to_thread(
            self.s3.put_object,
            Bucket=self.bucket,
            Key=key,
            Body=body,
            ContentType=CONTENT_TYPE,
            Metadata=metadata,
        )
        return str(response["ETag"])

    def full_gets(self, key: str, size: int | None = None) -> int:
        return len(self.proxy.full_gets(self.bucket, key, size))

    def ranged_gets(self, key: str, size: int | None = None) -> int:
        return len(self.proxy.ranged_gets(self.bucket, key, size))

    def temp_files(self) -> list[Path]:
        tmp = self.cache_dir / "tmp"
        return sorted(tmp.iterdir()) if tmp.is_dir() else []

    def entry_files(self) -> list[Path]:
        """The data files of complete entries (not their metadata)."""
        entries = self.cache_dir / "entries"
        return sorted(p for p in entries.glob("*/*") if p.suffix != ".json")


@pytest.fixture(name="cache_rig")
def cache_rig_fixture(
    s3_proxy: S3Proxy,
    s3: Any,
    bucket: str,
    tmp_path: Path,
    make_config: Callable[..., Config],
    start_vidproxy: Callable[..., Any],
) -> CacheRig:
    return CacheRig(s3_proxy, bucket, s3, tmp_path / "cache", make_config, start_vidproxy)


# ---- slow readers, bytes on disk, small filesystems -------------------------------

# A receive buffer this small (set before connecting, so the kernel does not
# grow it) stalls the server's send within a few hundred KiB.
SLOW_READER_RCVBUF = 16 * KiB
SAMPLE_INTERVAL = 0.005  # seconds between two looks at the disk


class SlowReaders:
    """``await open(client, key)`` sends a GET, reads the answer's head
    (returned) and then nothing more, until ``close``."""

    def __init__(self) -> None:
        self._opened: list[RawConnection] = []

    async def open(self, client: TestClient[Any, Any], key: str) -> CIMultiDict[str]:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_READER_RCVBUF)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (client.host, client.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        connection = RawConnection(reader, writer)
        self._opened.append(connection)
        await connection.send_head("GET", f"/videos/{key}", {})
        status, headers = await connection.read_head()
        assert status == 200, status
        return headers

    async def close(self) -> None:
        """Hang up: a server shutting down would wait for these answers."""
        while self._opened:
            await self._opened.pop().close()


@pytest.fixture(name="slow_readers")
async def slow_readers_fixture() -> AsyncIterator[SlowReaders]:
    readers = SlowReaders()
    yield readers
    await readers.close()


def bytes_under(root: Path) -> int:
    """Bytes of the files under ``root``, with those unlinked but still open in
    this process (where vidproxy runs): they hold disk space that du misses."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for path in root.rglob("*"):
        total += _count_once(path, seen)
    prefix = f"{root}/"
    for fd in os.listdir("/proc/self/fd"):
        link = f"/proc/self/fd/{fd}"
        try:
            target = os.readlink(link)
        except OSError:
            continue
        if target.startswith(prefix) and target.endswith(" (deleted)"):
            total += _count_once(Path(link), seen)
    return total


def _count_once(path: Path, seen: set[tuple[int, int]]) -> int:
    try:
        stat = path.stat()
    except OSError:  # gone meanwhile
        return 0
    inode = (stat.st_dev, stat.st_ino)
    if not path.is_file() or inode in seen:
        return 0
    seen.add(inode)
    return stat.st_size


class DiskSampler:
    """Samples ``measure()`` in a thread every few milliseconds while in use;
    ``highest`` and ``lowest`` are what it saw."""

    def __init__(self, measure: Callable[[], int]) -> None:
        self._measure = measure
        self.highest = self.lowest = measure()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> DiskSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL):
            self._sample()

    def _sample(self) -> None:
        value = self._measure()
        self.highest = max(self.highest, value)
        self.lowest = min(self.lowest, value)


def free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


MountTmpfs = Callable[..., Path]


@pytest.fixture(name="tmpfs")
def tmpfs_fixture(tmp_path: Path) -> Iterator[MountTmpfs]:
    """Mount small tmpfs filesystems for this test; skips where mounting is not allowed."""
    mounted: list[Path] = []

    def mount(name: str, **options: int) -> Path:
        mount_point = tmp_path / name
        mount_point.mkdir()
        command = shutil.which("mount")
        if command is None:
            pytest.skip("no mount command")
        listed = ",".join(f"{option}={value}" for option, value in options.items())
        done = subprocess.run(
            [command, "-t", "tmpfs", "-o", listed, "tmpfs", str(mount_point)],
            capture_output=True,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
        mounted.append(mount_point)
        return mount_point

    try:
        yield mount
    finally:
        for mount_point in mounted:
            if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode:
                subprocess.run(["umount", "--lazy", str(mount_point)], check=True)
