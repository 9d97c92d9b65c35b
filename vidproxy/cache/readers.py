"""The ``ObjectReader``s the cache hands out: a hit on disk, a fill being
followed, and a range far ahead of any fill."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

from ..conditions import ByteRange, RangeSpec
from ..errors import ObjectDamaged
from ..files import read_file
from ..storage.base import Chunk, ObjectReader, close_stream
from ..units import MiB
from .fill import Fill, read_following
from .index import Entry, EntryIndex

# A range starting this far past what a fill has written is fetched directly:
# a player seeking to minute 50 must not wait for minutes 0-50.
READAHEAD = 4 * MiB


def far_ahead(hint: RangeSpec | None, filled: int) -> bool:
    """Whether a range should go straight to the backend instead of following a fill."""
    if hint is None:
        return False
    return hint.start is None or hint.start > filled + READAHEAD


def labelled(reader: ObjectReader) -> ObjectReader:
    reader.cache_status = "MISS"
    return reader


class HitReader:
    cache_status: str | None = "HIT"

    def __init__(self, index: EntryIndex, entry: Entry) -> None:
        self._index = index
        self._entry = entry
        self.info = entry.info
        self.local_path: Path | None = entry.path
        entry.readers += 1

    async def stream(self, byte_range: ByteRange | None) -> AsyncIterator[bytes]:
        return read_file(self._entry.path, byte_range or ByteRange(0, self.info.size))

    async def aclose(self) -> None:
        self._index.release(self._entry)

    def damaged(self, found: str) -> ObjectDamaged:
        self._index.drop_damaged(self._entry, found)
        return ObjectDamaged(f"the cached copy was damaged ({found}) and is dropped; retry")


class FillReader:
    """Reads an object that is being filled: as the fill brings it in, or, for a
    range far ahead of it, from the backend directly. With ``stop_unread``
    (no ``cache.fill_on_disconnect``), the last reader to leave stops the fill."""

    cache_status: str | None = "MISS"
    local_path = None

    def __init__(self, fill: Fill, *, stop_unread: bool) -> None:
        self._fill = fill
        self._stop_unread = stop_unread
        self.info = fill.info
        fill.open_reader()  # now: the fill may end at any await

    async def stream(self, byte_range: ByteRange | None) -> AsyncIterator[Chunk]:
        wanted = byte_range or ByteRange(0, self.info.size)
        if wanted.start > self._fill.filled + READAHEAD and not self._fill.complete:
            return await self._fill.source.stream(byte_range)
        return read_following(self._fill, wanted)

    async def aclose(self) -> None:
        fill = self._fill
        fill.close_reader()
        unread = fill.readers == 0 and not fill.ended
        if unread and self._stop_unread and fill.task is not None:
            fill.task.cancel()

    def damaged(self, found: str) -> ObjectDamaged:
        return self._fill.source.damaged(found)


class FarRangeReader:
    """A range far ahead of any fill, answered by its own GET. The fill's GET
    goes out once the range's first bytes have: preparing an S3 request holds
    the event loop for milliseconds, and a seeking player is waiting."""

    cache_status: str | None = "MISS"
    local_path = None

    def __init__(self, direct: ObjectReader, start_fill: Callable[[], object]) -> None:
        self._direct = direct
        self._start_fill: Callable[[], object] | None = start_fill
        self._chunks: AsyncIterator[Chunk] | None = None
        self.info = direct.info

    async def stream(self, byte_range: ByteRange | None) -> AsyncIterator[Chunk]:
        self._chunks = chunks = await self._direct.stream(byte_range)
        return self._fill_after_first(chunks)

    async def _fill_after_first(self, chunks: AsyncIterator[Chunk]) -> AsyncIterator[Chunk]:
        async for chunk in chunks:
            yield chunk
            self._fill()  # the first chunk has been written by now

    def _fill(self) -> None:
        if self._start_fill is not None:
            start, self._start_fill = self._start_fill, None
            start()

    async def aclose(self) -> None:
        self._fill()  # answers without a body (304, 412) start it too
        if self._chunks is not None:
            await close_stream(self._chunks)  # closing our wrapper may not have
        await self._direct.aclose()

    def damaged(self, found: str) -> ObjectDamaged:
        return self._direct.damaged(found)
