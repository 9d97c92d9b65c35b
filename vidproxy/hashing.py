"""A hash fed piece by piece beside the I/O it checks."""

from __future__ import annotations

import asyncio
import hashlib

from .units import MiB

# Pieces this large are hashed in a worker thread (hashlib releases the GIL),
# so hashing one overlaps with receiving or sending the next.
THREAD_HASH_BYTES = 1 * MiB


class BackgroundHash:
    """One piece at a time: ``wait`` before the buffer just fed is reused."""

    def __init__(self, algorithm: str) -> None:
        self._hash = hashlib.new(algorithm)
        self._hashing: asyncio.Future[None] | None = None

    def feed(self, data: memoryview) -> None:
        """Start hashing ``data``; the previous piece must be done (``wait``)."""
        if self._hashing is not None:
            raise RuntimeError("the previous piece is still being hashed")
        if len(data) < THREAD_HASH_BYTES:
            self._hash.update(data)
        else:
            self._hashing = asyncio.ensure_future(asyncio.to_thread(self._hash.update, data))

    async def wait(self) -> None:
        """Until the last piece fed is hashed."""
        if self._hashing is not None:
            await self._hashing
            self._hashing = None

    async def hexdigest(self) -> str:
        await self.wait()
        return self._hash.hexdigest()
