"""The bytes every run moves: one seeded random block, repeated.

The block's length is 64 MiB plus an odd 4,099 bytes, so a byte served from
the wrong offset almost never equals the right one (the period never lines up
with a MiB boundary). Objects are streams of the block, never whole in memory;
what a download should contain is known from the offset alone, and each size's
SHA-256 is computed once.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from pathlib import Path

from .units import MiB

PERIOD = 64 * MiB + 4099
SEED = 20_261_129
HASH_PIECE = 4 * MiB


class Pattern:
    def __init__(self, period: int = PERIOD, seed: int = SEED) -> None:
        block = random.Random(seed).randbytes(period)
        self.period = period
        # Twice over, so any span up to one period is a single contiguous view.
        self._doubled = memoryview(block + block)
        self._digests: dict[int, str] = {}

    def pieces(self, start: int, stop: int, piece: int) -> Iterator[memoryview]:
        """Views of bytes ``start`` to ``stop`` of the endless stream, ``piece`` at a time."""
        position = start
        while position < stop:
            size = min(piece, stop - position, self.period)
            offset = position % self.period
            yield self._doubled[offset : offset + size]
            position += size

    def slice(self, start: int, stop: int) -> bytes:
        return b"".join(self.pieces(start, stop, self.period))

    def sha256(self, size: int) -> str:
        if size not in self._digests:
            hasher = hashlib.sha256()
            for view in self.pieces(0, size, HASH_PIECE):
                hasher.update(view)
            self._digests[size] = hasher.hexdigest()
        return self._digests[size]

    def sha256_of(self, start: int, stop: int) -> str:
        hasher = hashlib.sha256()
        for view in self.pieces(start, stop, HASH_PIECE):
            hasher.update(view)
        return hasher.hexdigest()

    def write_file(self, path: Path, size: int) -> None:
        with open(path, "wb") as f:
            for view in self.pieces(0, size, HASH_PIECE):
                f.write(view)


class PatternReader:
    """A read-only, non-seekable file object over the stream (for boto3's upload_fileobj)."""

    def __init__(self, pattern: Pattern, size: int) -> None:
        self._pattern = pattern
        self._size = size
        self._position = 0

    def read(self, n: int = -1) -> bytes:
        left = self._size - self._position
        n = left if n is None or n < 0 else min(n, left)
        data = self._pattern.slice(self._position, self._position + n)
        self._position += n
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False


def file_sha256(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_PIECE):
            hasher.update(chunk)
    return hasher.hexdigest()
