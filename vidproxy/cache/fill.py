"""One fill: a single full-object GET written to a temp file that readers follow.

Bytes are readable as soon as they arrive: the newest ones are kept in memory
for readers at the front (the client that caused the miss, typically), so the
first byte does not wait for a disk write; readers further behind read the
temp file. A fill never waits for a slow client, and a client that leaves
does not stop it. Bytes a reader needs that the fill will not provide (the
fill failed, or a disk error stopped it) come straight from the backend, so
the client still gets every byte.

A fill is not hashed: its readers get what the backend sent, as a direct
read would, and a complete fill becomes an entry that is checked before it is
a hit (``checks.py``). Hashing here, on 2 cores, held a cold GET to half the
backend's speed (bench/: cold GET, CPU seconds per GiB).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from ..conditions import ByteRange
from ..files import WRITE_CALL
from ..storage.base import Chunk, ObjectInfo, ObjectReader, close_stream
from ..tasks import finish, finish_in_thread
from ..units import MiB

log = logging.getLogger(__name__)

READ_CHUNK = 1 * MiB
# Bytes are written in batches of at least this size, one thread hop each; the
# next batches arrive while the previous one is written.
WRITE_BATCH = 4 * MiB  # at 1 MiB, the hops were ~10 % of a cold GET's busy samples (py-spy)
# The fill receives on (and its readers read from memory) while a batch is
# written, until this many bytes are not written yet: the disk (page cache
# writeback, a stalled write) never holds the client up unless it falls this
# far behind. Waiting for each batch instead held a cold GET to the disk's pace.
WRITE_AHEAD = 16 * MiB
# pwritev takes at most IOV_MAX (1024 on Linux) pieces per call.
IOV_MAX = 1024
# Written bytes stay in memory this long behind the newest, for readers that
# are a little behind the front.
KEEP_BEHIND = 2 * MiB
# Bytes the reader at the front has not read yet stay in memory too, up to this
# far behind the newest: once the fill no longer waits for each write, it runs
# ahead of a client slower than the backend, and that client read the temp file
# (a pread and a thread hop per MiB: with the write-ahead alone, a cold GET
# measured ~18 % more CPU per GiB).
KEEP_FOR_FRONT = 32 * MiB


class Fill:
    def __init__(
        self,
        info: ObjectInfo,
        source: ObjectReader,
        temp: Path,
        room: Awaitable[object] | None = None,
    ) -> None:
        self.info = info
        self.source = source  # serves ranges the fill cannot, pinned to info.etag
        self.temp = temp
        # Disk space being freed for this fill (evicted entries' unlinks): no
        # byte is written before it is.
        self._room = room
        # Called once the temp file is closed (its data may be an entry by then).
        self.on_closed: Callable[[], None] | None = None
        self.filled = 0  # bytes readers can have: in memory or in the temp file
        self.written = 0  # bytes in the temp file
        self.complete = False
        self.ended = False  # complete, failed or cancelled: no more bytes will come
        self.stale = False  # the key was written meanwhile: do not commit
        self.readers = 0
        self.task: asyncio.Task[None] | None = None
        # The newest chunks, contiguous up to ``filled``: everything not yet
        # written, and up to KEEP_BEHIND bytes that are.
        self._offsets: list[int] = []
        self._chunks: list[Chunk] = []
        self.front = 0  # how far the furthest reader has read
        self._unsent = 0  # offset of the first byte not yet handed to a write
        self._writing: asyncio.Future[int] | None = None
        self._fd: int | None = None  # opened by the first write, off the event loop
        self._closing = False
        self._progress: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def size(self) -> int:
        return self.info.size

    async def run(self, chunks: AsyncIterator[Chunk]) -> None:
        """Copy ``chunks`` into the temp file; raises unless all ``info.size`` bytes got in."""
        try:
            async for chunk in chunks:
                self._receive(chunk)
                await self._keep_writing()
            if self.filled != self.info.size:
                raise OSError(f"the backend sent {self.filled} of {self.info.size} bytes")
            await self._flush()
            await self._settle()
            await finish_in_thread(os.fsync, self._fd)  # type: ignore[arg-type]
            self.complete = True
        finally:
            self.ended = True
            self._notify()
            try:
                await close_stream(chunks)
            finally:
                await self._outlast_write()

    async def _outlast_write(self) -> None:
        """Wait for the write in progress, through any cancel: the thread goes on
        writing anyway (creating the temp file, if it is the first), and once
        ``run`` has returned the caller may unlink the file or close it."""
        if self._writing is not None:
            # A disk error here is the one _settle raised already, or comes
            # second to what is ending the fill.
            with contextlib.suppress(OSError):
                await finish(self._writing)

    def _receive(self, chunk: Chunk) -> None:
        self._offsets.append(self.filled)
        self._chunks.append(chunk)
        self.filled += len(chunk)
        self._notify()

    async def _keep_writing(self) -> None:
        """Hand what has arrived to the writer without waiting for the write in
        progress, unless WRITE_AHEAD bytes are already waiting for the disk."""
        if self._writing is not None and (
            self._writing.done() or self.filled - self.written > WRITE_AHEAD
        ):
            await self._settle()
        if self._writing is None and self.filled - self._unsent >= WRITE_BATCH:
            await self._flush()

    async def _flush(self) -> None:
        """Start writing what has arrived, once the previous write is done."""
        await self._settle()
        if self._room is not None:
            room, self._room = self._room, None
            await room
        # Writes end on chunk boundaries: the batch is every chunk from _unsent on.
        batch = self._chunks[bisect.bisect_left(self._offsets, self._unsent) :]
        offset, self._unsent = self._unsent, self.filled
        self._writing = asyncio.ensure_future(asyncio.to_thread(self._write, batch, offset))

    async def _settle(self) -> None:
        """Wait for the write in progress, if any."""
        if self._writing is None:
            return
        # Shielded: a cancelled fill must still know when the thread is done
        # with the descriptor (see ``run``).
        self.written = await asyncio.shield(self._writing)
        self._writing = None
        self._forget_written()

    def _write(self, batch: list[Chunk], offset: int) -> int:
        if self._fd is None:
            self._fd = create_temp(self.temp)
        _pwrite_all(self._fd, batch, offset)
        return offset + sum(len(chunk) for chunk in batch)

    def _forget_written(self) -> None:
        unread = max(min(self.written, self.front), self.filled - KEEP_FOR_FRONT)
        keep_at = min(self.written, unread) - KEEP_BEHIND
        keep_from = bisect.bisect_right(self._offsets, keep_at) - 1
        if keep_from > 0:
            del self._offsets[:keep_from]
            del self._chunks[:keep_from]

    def _notify(self) -> None:
        self._progress.set_result(None)
        self._progress = asyncio.get_running_loop().create_future()

    async def wait_past(self, offset: int) -> None:
        """Return once bytes beyond ``offset`` are in, or the fill has ended."""
        while self.filled <= offset and not self.ended:
            await asyncio.shield(self._progress)

    async def read(self, position: int, limit: int) -> bytes | memoryview:
        """Up to ``limit`` bytes from ``position`` (< ``filled``): from memory if
        they are still there, else from the temp file."""
        self.front = max(self.front, position + limit)
        index = bisect.bisect_right(self._offsets, position) - 1
        if index >= 0:
            start = position - self._offsets[index]
            return memoryview(self._chunks[index])[start : start + limit]
        size = min(limit, self.written - position)
        return await asyncio.to_thread(os.pread, self._fd, size, position)  # type: ignore[arg-type]

    def open_reader(self) -> None:
        self.readers += 1

    def close_reader(self) -> None:
        self.readers -= 1
        self._close_when_unused()

    def close(self) -> None:
        """Close the temp file once no reader is left (it outlives the rename)."""
        self._closing = True
        self._close_when_unused()

    def _close_when_unused(self) -> None:
        if not self._closing or self.readers > 0:
            return
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self.on_closed is not None:
            closed, self.on_closed = self.on_closed, None
            closed()


async def read_following(fill: Fill, byte_range: ByteRange) -> AsyncIterator[bytes | memoryview]:
    """Yield ``byte_range`` of the fill's object as the fill brings it in."""
    position = byte_range.start
    while position < byte_range.stop:
        await fill.wait_past(position)
        if fill.filled <= position:
            break  # the fill ended short of us: the backend serves the rest
        data = await fill.read(position, min(READ_CHUNK, byte_range.stop - position))
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


def _pwrite_all(fd: int, batch: list[Chunk], offset: int) -> None:
    views = [memoryview(chunk) for chunk in batch]
    while views:
        written = os.pwritev(fd, _one_call(views), offset)
        offset += written
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if views and written:
            views[0] = views[0][written:]


def _one_call(views: list[memoryview]) -> list[memoryview]:
    """The first views, up to WRITE_CALL bytes (at least one view)."""
    total = 0
    for count, view in enumerate(views[:IOV_MAX]):
        total += len(view)
        if total >= WRITE_CALL:
            return views[: count + 1]
    return views[:IOV_MAX]
