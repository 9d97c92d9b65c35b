"""Downloads: whole objects and a Range at 90 %, each verified after its clock stops."""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass, field

from . import client
from .data import Pattern
from .services import BUCKET, Env, Vidproxy
from .units import MiB
from .uploads import VerifyError

BOTO3_CHUNK = 1 * MiB
RANGE_AT = 0.90
CACHE_WAIT = 300.0  # seconds a fill may take to become a cache entry


@dataclass
class Timing:
    ttfb: float  # seconds
    elapsed: float  # seconds
    size: int
    headers: dict[str, str] = field(default_factory=dict)


def range_start(size: int) -> int:
    return int(size * RANGE_AT)


def check(buf: memoryview, pattern: Pattern, start: int, stop: int, what: str) -> None:
    """``buf`` holds bytes ``start`` to ``stop`` of the object: compared by SHA-256."""
    if hashlib.sha256(buf[: stop - start]).hexdigest() != pattern.sha256_of(start, stop):
        raise VerifyError(f"{what}: the bytes differ from the object's")


def http_get(port: int, path: str, buf: memoryview, size: int, start: int | None = None) -> Timing:
    """GET the object (or ``bytes=start-``) from any HTTP server into ``buf``."""
    headers = {"Range": f"bytes={start}-"} if start is not None else {}
    reply = client.get(port, path, headers, into=buf)
    want = 206 if start is not None else 200
    expected = size - (start or 0)
    if reply.status != want or reply.size != expected:
        raise VerifyError(f"GET {path} on :{port}: {reply.status}, {reply.size} bytes")
    return Timing(reply.ttfb, reply.elapsed, reply.size, reply.headers)


def vidproxy_get(
    vp: Vidproxy, key: str, buf: memoryview, size: int, start: int | None = None
) -> Timing:
    return http_get(vp.port, f"/videos/{key}", buf, size, start)


def boto3_get(
    env: Env,
    key: str,
    buf: memoryview,
    size: int,
    start: int | None = None,
    via_shim: bool = False,
) -> Timing:
    """get_object streamed in 1 MiB pieces; the first byte is read on its own."""
    s3 = env.s3_shim if via_shim else env.s3
    params = {"Bucket": BUCKET, "Key": key}
    if start is not None:
        params["Range"] = f"bytes={start}-"
    t0 = time.perf_counter()
    body = s3.get_object(**params)["Body"]
    first = body.read(1)
    ttfb = time.perf_counter() - t0
    buf[:1] = first
    position = 1
    for chunk in body.iter_chunks(BOTO3_CHUNK):
        buf[position : position + len(chunk)] = chunk
        position += len(chunk)
    elapsed = time.perf_counter() - t0
    body.close()
    if position != size - (start or 0):
        raise VerifyError(f"boto3 get_object of {key}: {position} bytes")
    return Timing(ttfb, elapsed, position)


def wait_cached(vp: Vidproxy, key: str) -> None:
    """Until vidproxy answers from its disk cache (its fill has been committed)."""
    deadline = time.monotonic() + CACHE_WAIT
    while True:
        reply = client.get(vp.port, f"/videos/{key}", method="HEAD")
        if reply.headers.get("x-cache") == "HIT":
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"vidproxy {vp.name} did not cache {key}")
        time.sleep(0.05)


def concurrent_cold_gets(
    env: Env, vp: Vidproxy, pattern: Pattern, key: str, size: int, clients: int
) -> int:
    """``clients`` GETs of one uncached object at once, each hashed; the number
    of GETs of that object that reached the backend (counted by the shim)."""
    since = env.shim_offset()
    barrier = threading.Barrier(clients)
    digests: list[str | BaseException] = []

    def one() -> None:
        barrier.wait()
        try:
            reply = client.get(vp.port, f"/videos/{key}", hash_inline=True)
            digests.append(reply.sha256 if reply.status == 200 else VerifyError(reply.status))
        except BaseException as exc:
            digests.append(exc)

    threads = [threading.Thread(target=one) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    bad = [d for d in digests if d != pattern.sha256(size)]
    if bad:
        raise VerifyError(f"{len(bad)} of {clients} concurrent GETs got other bytes: {bad[0]!r}")
    wait_cached(vp, key)
    path = f"/{BUCKET}/{key}"
    return sum(
        1 for line in env.shim_lines(since) if line[0] == "GET" and line[1].split("?")[0] == path
    )
