"""What an object's bytes should hash to, and hashing them to check.

A backend records an object's SHA-256 where it can (``ObjectInfo.sha256``);
an S3 ETag is the body's MD5 for single-part objects that are not encrypted
with KMS or a customer key (``ObjectInfo.md5``). ``expected_digests`` lists
those bytes are checked against. ``Digester.update`` is blocking (hashlib
releases the GIL for large pieces): call it in a thread.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..tasks import finish_in_thread
from ..units import MiB
from .base import ObjectInfo

SHA256 = "sha256"
MD5 = "md5"
ALGORITHMS = (SHA256, MD5)
HASH_CHUNK = 1 * MiB


@dataclass(frozen=True)
class Digest:
    algorithm: str  # a hashlib name, one of ALGORITHMS
    hex: str

    @classmethod
    def from_record(cls, record: Any) -> Digest | None:
        """The digest to check with in a ``{"sha256": hex, "md5": hex}`` record
        (SHA-256 first: it is the faster), if it holds one."""
        if not isinstance(record, dict):
            return None
        for algorithm in ALGORITHMS:
            value = record.get(algorithm)
            if isinstance(value, str) and value:
                return cls(algorithm, value.lower())
        return None

    def __str__(self) -> str:
        return f"{self.algorithm} {self.hex}"


def expected_digests(info: ObjectInfo, *, trust_etag_md5: bool = True) -> tuple[Digest, ...]:
    """The digest the object's bytes must have: its SHA-256 where one is known
    (metadata, or a record that names this version's ETag and size, so bytes
    of another version under this ETag fail it too), else the ETag's MD5.
    Never both: on this project's 2-core machine MD5 alone was ~1.7 CPU-s per
    GiB, 40 % of a cold GET's CPU, and on a busy machine a cold GET's
    throughput is its CPU (bench/: first GET figure, CPU seconds per GiB)."""
    if info.sha256:
        return (Digest(SHA256, info.sha256.lower()),)
    if trust_etag_md5 and info.md5:
        return (Digest(MD5, info.md5.lower()),)
    return ()


def content_record(digests: Iterable[Digest]) -> dict[str, str]:
    return {digest.algorithm: digest.hex for digest in digests}


class Digester:
    """Hashes over bytes fed in order: one per expected digest, or a SHA-256
    (to record what the bytes were) where nothing is expected."""

    def __init__(self, expected: Sequence[Digest] = ()) -> None:
        algorithms = [digest.algorithm for digest in expected] or [SHA256]
        self._hashes = {algorithm: hashlib.new(algorithm) for algorithm in algorithms}
        self.size = 0

    def update(self, data: bytes | memoryview) -> None:
        for hashed in self._hashes.values():
            hashed.update(data)
        self.size += len(data)

    def digests(self) -> tuple[Digest, ...]:
        return tuple(Digest(a, hashed.hexdigest()) for a, hashed in self._hashes.items())

    def mismatch(self, expected: Sequence[Digest]) -> str | None:
        """How the bytes differ from ``expected`` (made with it), or None."""
        found = {digest.algorithm: digest for digest in self.digests()}
        for digest in expected:
            if found[digest.algorithm] != digest:
                return f"its bytes have {found[digest.algorithm]}, {digest} recorded"
        return None


def size_problem(found: int | None, recorded: int) -> str:
    """What is wrong with a local file of ``found`` bytes (None: missing)."""
    if found is None:
        return f"the data file is missing; {recorded} bytes recorded"
    return f"{found} bytes on disk, {recorded} recorded"


async def hash_file(path: Path, expected: Sequence[Digest], bytes_per_second: int = 0) -> Digester:
    """Hash all of ``path`` in a worker thread, a chunk per hop; with
    ``bytes_per_second``, no faster than that (work in the background must
    leave the disk and the CPU to requests)."""
    digester = Digester(expected)
    fd = await asyncio.to_thread(os.open, path, os.O_RDONLY)
    try:
        started = time.monotonic()
        while await asyncio.to_thread(_hash_chunk, fd, digester):
            if bytes_per_second:
                due = started + digester.size / bytes_per_second
                await asyncio.sleep(max(0.0, due - time.monotonic()))
    finally:
        await finish_in_thread(os.close, fd)  # a close a cancel skipped would leak the fd
    return digester


async def check_file(
    path: Path, size: int, expected: Sequence[Digest], bytes_per_second: int = 0
) -> str | None:
    """What is wrong with ``path`` against its recorded size and digests, or None."""
    try:
        hashed = await hash_file(path, expected, bytes_per_second)
    except FileNotFoundError:
        return size_problem(None, size)
    except OSError as exc:
        return f"cannot read it: {exc.strerror or exc}"
    if hashed.size != size:
        return size_problem(hashed.size, size)
    return hashed.mismatch(expected)


def _hash_chunk(fd: int, digester: Digester) -> bool:
    """Hash the next chunk; False at the end of the file."""
    chunk = os.pread(fd, HASH_CHUNK, digester.size)
    if not chunk:
        return False
    digester.update(chunk)
    return True
