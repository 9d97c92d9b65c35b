"""One fill: a single full-object GET streamed into a temp file that readers follow.

Every reader, the one that caused the miss included, reads the growing temp
file through its own descriptor, so a fill never waits for a slow client and a
client that leaves does not stop the fill. Bytes a reader needs that the fill
will not provide (the fill failed, or a disk error stopped it) come straight
from the backend, so the client still gets every byte.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

from ..conditions import ByteRange
from ..storage.base import ObjectInfo, ObjectReader
from ..units import MiB

log = logging.getLogger(__name__)

READ_CHUNK = 1 * MiB
# Writes are batched to about this size, one thread hop each.
WRITE_BATCH = 1 * MiB


class Fill:
    def __init__(self, info: ObjectInfo, source: ObjectReader, temp: Path, fd: int) -> None:
        self.info = info
        self.source = source  # serves ranges the fill cannot, pinned to info.etag
        self.temp = temp
        self.filled = 0
        self.complete = False
        self.ended = False  # complete, failed or cancelled: no more bytes will come
        self.stale = False  # the key was written meanwhile: do not commit
        self.readers = 0
        self._fd = fd  # created by the caller with create_temp()
        self._progress: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task[None] | None = None

    async def run(self, chunks: AsyncIterator[bytes]) -> None:
        """Copy ``chunks`` into the temp file; raises unless all ``info.size`` bytes got in."""
        try:
            await self._copy(chunks)
            if self.filled != self.info.size:
                raise OSError(f"the backend sent {self.filled} of {self.info.size} bytes")
            await asyncio.to_thread(os.fsync, self._fd)
            self.complete = True
        finally:
            self.ended = True
            self._notify()
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _copy(self, chunks: AsyncIterator[bytes]) -> None:
        batch: list[bytes] = []
        batched = 0
        async for chunk in chunks:
            batch.append(chunk)
            batched += len(chunk)
            if batched >= WRITE_BATCH:
                await self._write(b"".join(batch))
                batch, batched = [], 0
        if batch:
            await self._write(b"".join(batch))

    async def _write(self, data: bytes) -> None:
        await asyncio.to_thread(_pwrite_all, self._fd, data, self.filled)
        self.filled += len(data)
        self._notify()

    def _notify(self) -> None:
        self._progress.set_result(None)
        self._progress = asyncio.get_running_loop().create_future()

    async def wait_past(self, offset: int) -> None:
        """Return once bytes beyond ``offset`` are in, or the fill has ended."""
        while self.filled <= offset and not self.ended:
            await asyncio.shield(self._progress)

    def open_reader(self) -> int:
        """A descriptor of the temp file for one reader; it outlives the rename
        and the fill's own descriptor."""
        self.readers += 1
        return os.dup(self._fd)

    def close_reader(self, fd: int) -> None:
        os.close(fd)
        self.readers -= 1

    def close(self) -> None:
        os.close(self._fd)


async def read_following(fill: Fill, fd: int, byte_range: ByteRange) -> AsyncIterator[bytes]:
    """Yield ``byte_range`` from the fill's temp file (through ``fd``) as it grows."""
    position = byte_range.start
    while position < byte_range.stop:
        await fill.wait_past(position)
        if fill.filled <= position:
            break  # the fill ended short of us: the backend serves the rest
        size = min(READ_CHUNK, byte_range.stop - position, fill.filled - position)
        data = await asyncio.to_thread(os.pread, fd, size, position)
        if not data:
            break
        position += len(data)
        yield data
    if position < byte_range.stop:
        rest = await fill.source.stream(ByteRange(position, byte_range.stop))
        async for data in rest:
            yield data


def create_temp(path: Path) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
