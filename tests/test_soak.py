"""A bounded soak: 32 clients against vidproxy (a real process) on its own moto.

For ``VIDPROXY_SOAK_SECONDS`` (30 unless set; CI runs the full 30 s) every client
loops over a random mix: small and multipart uploads, with Content-Length or
chunked; full and ranged downloads; overwrites and deletes of its own keys, and
overwrites and reads of a few keys all clients share. Each client keeps an exact
model of its own keys, so every byte it gets back is checked; a shared key must
read back as one whole body some client wrote.

At the end: no 5xx at all, every key reads back as the model says, no multipart
upload left in S3, no temp file left in the cache, exit code 0 on SIGTERM, and
vidproxy's resident memory stayed under a bound derived from its settings.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import boto3
import pytest
from botocore.config import Config as BotoConfig
from conftest import NO_STALE_UPLOAD_SWEEP_ENV, PART_SIZE
from fault_rig import MotoProcess, VidproxyProcess

SOAK_SECONDS = float(os.environ.get("VIDPROXY_SOAK_SECONDS", "30"))
CLIENTS = 32
KEYS_PER_CLIENT = 3
SHARED_KEYS = 4
UPLOAD_CONCURRENCY = 2
MiB = 1024 * 1024
# Bodies are windows into one random pool: cheap to make again, unique by offset.
POOL = random.Random(2024).randbytes(24 * MiB)
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=120)
RSS_SAMPLE_SECONDS = 0.25
# vidproxy itself, its buffers and the cache's, above the parts uploads hold.
RSS_SLACK = 256 * MiB


def body_of(seed: int, size: int) -> bytes:
    offset = (seed * 7919) % (len(POOL) - size)
    return POOL[offset : offset + size]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Version:
    seed: int
    size: int

    @property
    def body(self) -> bytes:
        return body_of(self.seed, self.size)


@dataclass
class Tally:
    ops: collections.Counter[str] = field(default_factory=collections.Counter)
    failures: list[str] = field(default_factory=list)
    shared: dict[str, set[str]] = field(default_factory=dict)  # key -> sha256s ever written
    shared_stored: set[str] = field(default_factory=set)  # keys with a finished upload

    def fail(self, what: str) -> None:
        if len(self.failures) < 50:
            self.failures.append(what)


class SoakClient:
    def __init__(self, number: int, http: aiohttp.ClientSession, tally: Tally) -> None:
        self.rng = random.Random(number)
        self.http = http
        self.tally = tally
        self.keys = [f"c{number:02d}/k{j}.mp4" for j in range(KEYS_PER_CLIENT)]
        self.model: dict[str, Version | None] = dict.fromkeys(self.keys)
        self.seed = number * 1_000_000

    async def run(self, until: float) -> None:
        operations = [
            (self.put_small, 25),
            (self.put_multipart, 12),
            (self.get_full, 22),
            (self.get_range, 26),
            (self.delete, 5),
            (self.shared_write, 4),
            (self.shared_read, 6),
        ]
        actions, weights = zip(*operations, strict=True)
        while time.monotonic() < until:
            action = self.rng.choices(actions, weights)[0]
            try:
                await action()
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.tally.fail(f"{action.__name__}: {type(exc).__name__}: {exc}")
            self.tally.ops[action.__name__] += 1

    # ---- writes ---------------------------------------------------------------

    def new_version(self, low: int, high: int) -> Version:
        self.seed += 1
        return Version(self.seed, self.rng.randint(low, high))

    async def upload(self, key: str, version: Version) -> bool:
        body = version.body
        chunked = self.rng.random() < 0.4
        data: Any = _pieces(body, self.rng.choice([16 * 1024, 256 * 1024])) if chunked else body
        async with self.http.put(f"/videos/{key}", data=data) as response:
            answer = await response.read()
            if response.status != 201:
                what = f"PUT {key} ({len(body)} B, chunked={chunked}): {response.status}"
                self.tally.fail(f"{what} {answer[:200]!r}")
                return False
            if (await response.json())["sha256"] != sha256(body):
                self.tally.fail(f"PUT {key}: the stored checksum differs")
                return False
        return True

    async def put_small(self) -> None:
        key = self.rng.choice(self.keys)
        version = self.new_version(0, 512 * 1024)
        if await self.upload(key, version):
            self.model[key] = version

    async def put_multipart(self) -> None:
        key = self.rng.choice(self.keys)
        version = self.new_version(PART_SIZE + 1, 2 * PART_SIZE + 1000)
        if await self.upload(key, version):
            self.model[key] = version

    async def delete(self) -> None:
        key = self.rng.choice(self.keys)
        async with self.http.delete(f"/videos/{key}") as response:
            if response.status != 204:
                self.tally.fail(f"DELETE {key}: {response.status}")
                return
        self.model[key] = None

    # ---- reads ----------------------------------------------------------------

    async def get_full(self, key: str | None = None) -> None:
        key = key or self.rng.choice(self.keys)
        expected = self.model[key]
        async with self.http.get(f"/videos/{key}") as response:
            body = await response.read()
            status = response.status
        if expected is None:
            if status != 404:
                self.tally.fail(f"GET {key}: {status}, expected 404")
        elif status != 200 or body != expected.body:
            self.tally.fail(f"GET {key}: {status}, {len(body)} of {expected.size} B, bytes differ")

    async def get_range(self) -> None:
        key = self.rng.choice(self.keys)
        expected = self.model[key]
        size = expected.size if expected is not None else 1000
        if size == 0:
            return await self.get_full(key)
        start = self.rng.randrange(size)
        end = self.rng.randrange(start, size)
        header = self.rng.choice(
            [f"bytes={start}-{end}", f"bytes={start}-", f"bytes=-{end - start + 1}"]
        )
        async with self.http.get(f"/videos/{key}", headers={"Range": header}) as response:
            body = await response.read()
            status = response.status
        if expected is None:
            if status != 404:
                self.tally.fail(f"GET {key} {header}: {status}, expected 404")
            return
        whole = expected.body
        if header.startswith("bytes=-"):
            wanted = whole[-(end - start + 1) :]
        elif header.endswith("-"):
            wanted = whole[start:]
        else:
            wanted = whole[start : end + 1]
        if status != 206 or body != wanted:
            self.tally.fail(f"GET {key} {header}: {status}, {len(body)} B, bytes differ")

    async def shared_write(self) -> None:
        key = f"shared/{self.rng.randrange(SHARED_KEYS)}.mp4"
        version = self.new_version(0, PART_SIZE + 1000)
        self.tally.shared.setdefault(key, set()).add(sha256(version.body))
        if await self.upload(key, version):
            self.tally.shared_stored.add(key)

    async def shared_read(self) -> None:
        key = f"shared/{self.rng.randrange(SHARED_KEYS)}.mp4"
        # Before the GET goes out: a first upload finishing while it is answered
        # may come too late for it, and then 404 is the right answer.
        stored_before = key in self.tally.shared_stored
        async with self.http.get(f"/videos/{key}") as response:
            body = await response.read()
            status = response.status
        if status == 404 and not stored_before:
            return
        if status != 200 or sha256(body) not in self.tally.shared.get(key, set()):
            self.tally.fail(f"GET {key}: {status}, {len(body)} B: not one whole written body")


async def _pieces(body: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


@dataclass
class Rig:
    vidproxy: VidproxyProcess
    s3: Any
    bucket: str
    cache_dir: Path


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    moto = MotoProcess(tmp_path / "moto.log").start()
    try:
        s3 = boto3.client(
            "s3", endpoint_url=moto.url, config=BotoConfig(retries={"max_attempts": 1})
        )
        bucket = f"soak-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(Bucket=bucket)
        env = {
            "VIDPROXY_S3_BUCKET": bucket,
            "VIDPROXY_S3_ENDPOINT_URL": moto.url,
            "VIDPROXY_S3_ADDRESSING_STYLE": "path",
            "VIDPROXY_S3_PART_SIZE": str(PART_SIZE),
            "VIDPROXY_S3_UPLOAD_CONCURRENCY": str(UPLOAD_CONCURRENCY),
            **NO_STALE_UPLOAD_SWEEP_ENV,
            "VIDPROXY_CACHE_DIR": str(tmp_path / "cache"),
            "VIDPROXY_CACHE_MAX_BYTES": "256MiB",
            "VIDPROXY_CACHE_MIN_FREE_BYTES": "0",
            "VIDPROXY_SERVER_LOG_LEVEL": "warning",
        }
        vidproxy = VidproxyProcess(tmp_path, env).start()
        try:
            yield Rig(vidproxy, s3, bucket, tmp_path / "cache")
        finally:
            vidproxy.stop()
    finally:
        moto.stop()


async def sample_rss(process: VidproxyProcess, samples: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        samples.append(process.rss_bytes())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RSS_SAMPLE_SECONDS)


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


async def test_soak_32_clients_mixed_load(rig: Rig) -> None:
    tally = Tally()
    baseline = rig.vidproxy.rss_bytes()
    samples: list[int] = []
    stop_sampling = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(rig.vidproxy, samples, stop_sampling))
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        rig.vidproxy.url, connector=connector, timeout=REQUEST_TIMEOUT
    ) as http:
        clients = [SoakClient(i, http, tally) for i in range(CLIENTS)]
        until = time.monotonic() + SOAK_SECONDS
        await asyncio.gather(*(client.run(until) for client in clients))
        stop_sampling.set()
        await sampler
        for client in clients:  # the end state, key by key
            for key in client.keys:
                await client.get_full(key)
    print(f"\nsoak: {sum(tally.ops.values())} operations in {SOAK_SECONDS:g} s: {dict(tally.ops)}")
    print(
        f"soak: vidproxy RSS {baseline / MiB:.0f} MiB at start, {max(samples) / MiB:.0f} MiB peak"
    )
    assert tally.failures == []
    assert all(tally.ops[name] > 0 for name in ("put_multipart", "get_range", "delete"))

    assert await asyncio.to_thread(rig.vidproxy.stop) == 0
    uploads = rig.s3.list_multipart_uploads(Bucket=rig.bucket).get("Uploads", [])
    assert uploads == []
    assert names(rig.cache_dir / "tmp") == []
    # Each upload holds at most UPLOAD_CONCURRENCY parts in flight plus the one it reads.
    bound = baseline + CLIENTS * (UPLOAD_CONCURRENCY + 1) * PART_SIZE + RSS_SLACK
    assert max(samples) < bound, f"peak RSS {max(samples)} over {bound}"
