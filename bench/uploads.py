"""Uploads: vidproxy (Content-Length and chunked) against boto3, and vidproxy's memory."""

from __future__ import annotations

import json
import threading
import time

from boto3.s3.transfer import TransferConfig

from . import client
from .data import Pattern, PatternReader, file_sha256
from .services import BUCKET, PART_SIZE, UPLOAD_CONCURRENCY, Env, Vidproxy
from .units import KiB, MiB

SEND_PIECE = 1 * MiB  # Content-Length bodies go out in views this large
# Chunked bodies: one chunk per 64 KiB, curl's upload buffer (`curl -T -`).
CHUNK = 64 * KiB
CONTENT_TYPE = {"Content-Type": "application/octet-stream"}


class VerifyError(Exception):
    """Bytes stored or served differ from the bytes sent."""


def vidproxy_upload(vp: Vidproxy, pattern: Pattern, key: str, size: int, chunked: bool) -> float:
    """Seconds for one upload through vidproxy; checks its answer."""
    pieces = pattern.pieces(0, size, CHUNK if chunked else SEND_PIECE)
    reply = client.upload(
        vp.port, f"/videos/{key}", pieces, None if chunked else size, CONTENT_TYPE
    )
    if reply.status != 201:
        raise VerifyError(f"upload of {key} answered {reply.status}: {reply.body[:300]!r}")
    answer = json.loads(reply.body)
    if answer["size"] != size or answer["sha256"] != pattern.sha256(size):
        raise VerifyError(f"upload of {key}: vidproxy saw other bytes ({answer})")
    return reply.elapsed


def boto3_upload(env: Env, pattern: Pattern, key: str, size: int) -> float:
    """Seconds for boto3's upload_fileobj, with vidproxy's part size and concurrency,
    from a non-seekable stream (as vidproxy gets its bodies)."""
    config = TransferConfig(
        multipart_threshold=PART_SIZE,
        multipart_chunksize=PART_SIZE,
        max_concurrency=UPLOAD_CONCURRENCY,
        use_threads=True,
    )
    start = time.perf_counter()
    env.s3.upload_fileobj(PatternReader(pattern, size), BUCKET, key, Config=config)
    return time.perf_counter() - start


def verify_stored(env: Env, pattern: Pattern, key: str, size: int) -> None:
    """The backend's file holds exactly the pattern; then it is deleted (disk stays small)."""
    path = env.object_path(key)
    try:
        if path.stat().st_size != size or file_sha256(path) != pattern.sha256(size):
            raise VerifyError(f"the backend's copy of {key} differs from what was sent")
    finally:
        env.delete(key)


def concurrent_uploads(vp: Vidproxy, pattern: Pattern, keys: list[str], size: int) -> list[float]:
    """Chunked uploads of ``size`` to every key at once; seconds of each."""
    barrier = threading.Barrier(len(keys))
    results: dict[str, float | BaseException] = {}

    def one(key: str) -> None:
        barrier.wait()
        try:
            results[key] = vidproxy_upload(vp, pattern, key, size, chunked=True)
        except BaseException as exc:
            results[key] = exc

    threads = [threading.Thread(target=one, args=(key,)) for key in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    failures = [r for r in results.values() if isinstance(r, BaseException)]
    if failures:
        raise failures[0]
    return [float(r) for r in results.values()]  # type: ignore[arg-type]
