"""Fills in flight: one per key, and every reader of that key follows it.

- a miss opens one whole-object GET and starts a ``Fill`` from it; until the
  fill exists, other requests for the key wait (``starting``) instead of
  opening a second GET, then join it;
- a range far ahead of the start is answered by its own ranged GET, and the
  fill goes out behind it (``FarRangeReader``);
- a fill starts only once idle entries were evicted to make room for it
  (``EntryIndex.make_room``); where none can be, the object is served uncached;
- a write through this process makes the key's fill stale: it is not kept,
  and no request after the write joins it;
- a complete fill becomes the key's entry, a hit once it is hashed (``checks.py``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from ..conditions import RangeSpec
from ..config import CacheConfig
from ..storage.base import Chunk, ObjectReader, Store
from ..tasks import finish
from .budget import DiskBudget
from .checks import EntryChecks, first_digest
from .clock import Clock
from .disk import CacheDir
from .fill import Fill
from .index import Entry, EntryIndex
from .readers import FarRangeReader, FillReader, far_ahead, labelled

log = logging.getLogger(__name__)


class Flights:
    def __init__(
        self,
        inner: Store,
        cfg: CacheConfig,
        disk: CacheDir,
        index: EntryIndex,
        budget: DiskBudget,
        checks: EntryChecks,
        clock: Clock,
    ) -> None:
        self._inner = inner
        self._checks = checks
        self._cfg = cfg
        self._disk = disk
        self._index = index
        self._budget = budget
        self._clock = clock
        self._fills: dict[str, Fill] = {}  # the fill new readers of a key join
        self._starting: dict[str, asyncio.Future[None]] = {}  # keys whose fill is being opened
        self._writes = 0  # bumped by every write through this process
        self._behind: set[asyncio.Task[None]] = set()  # fills starting behind a far range
        # Every fill's task, also those no request may join any more (stale,
        # invalidated): close() must stop them all, or their temp files outlive it.
        self._running: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._fills)

    def follow(self, key: str) -> ObjectReader | None:
        """A reader of the fill of ``key`` in flight, if there is one."""
        fill = self._fills.get(key)
        if fill is None:
            return None
        return FillReader(fill, stop_unread=not self._cfg.fill_on_disconnect)

    def starting(self, key: str) -> asyncio.Future[None] | None:
        """Done once the fill another request is opening for ``key`` has started (or not)."""
        return self._starting.get(key)

    def invalidate(self, key: str) -> None:
        self._writes += 1
        fill = self._fills.pop(key, None)
        if fill is not None:
            fill.stale = True

    async def close(self) -> None:
        # First the fills starting behind a far range, so none starts after the cancel.
        await asyncio.gather(*self._behind, return_exceptions=True)
        tasks = list(self._running)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- a miss ----------------------------------------------------------------

    async def miss(self, key: str, hint: RangeSpec | None) -> ObjectReader:
        """Open ``key``, which has no entry and no fill, and fill it if it can be."""
        # Until the fill exists, requests for this key wait for it here rather
        # than fetch the object a second time.
        starting = self._starting[key] = asyncio.get_running_loop().create_future()
        writes_before = self._writes
        if far_ahead(hint, 0):
            return await self._miss_far_ahead(key, hint, writes_before, starting)
        try:
            full = await self._inner.open(key, None)
            try:
                fill = await self._begin_fill(key, full, writes_before)
            except BaseException:
                await full.aclose()
                raise
        finally:
            self._started(key, starting)
        if fill is None:
            return labelled(full)
        return FillReader(fill, stop_unread=not self._cfg.fill_on_disconnect)

    async def _miss_far_ahead(
        self, key: str, hint: RangeSpec | None, writes_before: int, starting: asyncio.Future[None]
    ) -> ObjectReader:
        try:
            direct = await self._inner.open(key, hint)
        except BaseException:
            self._started(key, starting)
            raise
        return FarRangeReader(direct, lambda: self._start_behind(key, writes_before, starting))

    def _start_behind(self, key: str, writes_before: int, starting: asyncio.Future[None]) -> None:
        task = asyncio.ensure_future(self._fill_behind(key, writes_before, starting))
        self._behind.add(task)
        task.add_done_callback(self._behind.discard)

    async def _fill_behind(
        self, key: str, writes_before: int, starting: asyncio.Future[None]
    ) -> None:
        try:
            # Without fill_on_disconnect a fill runs only for clients that read
            # it, and a range far ahead reads the backend instead.
            if self._cfg.fill_on_disconnect:
                full = await self._inner.open(key, None)
                if await self._begin_fill(key, full, writes_before) is None:
                    await full.aclose()
        except Exception as exc:
            log.warning("cache: cannot start a fill of %r: %s", key, exc)
        finally:
            self._started(key, starting)

    def _started(self, key: str, starting: asyncio.Future[None]) -> None:
        del self._starting[key]
        starting.set_result(None)

    # ---- a fill ----------------------------------------------------------------

    async def _begin_fill(self, key: str, full: ObjectReader, writes_before: int) -> Fill | None:
        """Start filling from ``full`` (a whole-object GET), or None if it cannot be cached."""
        unlinks = self._index.make_room(full.info.size)
        if unlinks is None:
            return None
        room = asyncio.gather(*unlinks, return_exceptions=True) if unlinks else None
        fill = Fill(full.info, full, self._disk.temp_path(key), room)
        # Reserved before anything can await, so no other fill counts this room.
        self._budget.fills.add(fill)
        fill.on_closed = lambda: self._budget.fills.discard(fill)
        try:
            chunks = await full.stream(None)
        except BaseException:
            self._budget.fills.discard(fill)
            raise
        self._fills[key] = fill
        fill.task = asyncio.create_task(self._run_fill(key, fill, chunks))
        self._running.add(fill.task)
        fill.task.add_done_callback(self._running.discard)
        fill.stale = self._writes != writes_before
        if fill.stale:
            # Written while we opened it: this reader may have the old bytes it
            # asked for first, but no request after the write may join them.
            del self._fills[key]
        return fill

    async def _run_fill(self, key: str, fill: Fill, chunks: AsyncIterator[Chunk]) -> None:
        try:
            await fill.run(chunks)
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            log.error("cache: fill of %r stopped: %s", key, exc)
        # To its end even when shutdown cancels us here (again, if the last
        # reader leaving did first): a commit or an unlink still queued for a
        # thread went with the cancel, and its temp file stayed.
        await finish(self._end_fill(key, fill))

    async def _end_fill(self, key: str, fill: Fill) -> None:
        try:
            if fill.complete and not fill.stale:
                await self._keep(key, fill)
            else:
                await asyncio.to_thread(fill.temp.unlink, missing_ok=True)
        finally:
            # Only now: requests arriving while the entry was committed joined the fill.
            if self._fills.get(key) is fill:
                del self._fills[key]
            fill.close()

    async def _keep(self, key: str, fill: Fill) -> None:
        accessed = self._clock.now()
        content = first_digest(fill.info, self._cfg.verify_etag_md5)
        commit = self._disk.commit
        expected = [content] if content is not None else []
        try:
            path = await asyncio.to_thread(commit, fill.info, fill.temp, expected, accessed)
        except OSError as exc:
            log.error("cache: could not keep %r: %s", key, exc)
            await asyncio.to_thread(fill.temp.unlink, missing_ok=True)
            return
        entry = Entry(fill.info, path, accessed, content, checked_at=self._clock.monotonic())
        entry.persisted_access = accessed
        # The fill's descriptor is the entry's file now; its readers hold it.
        entry.readers += 1
        fill.on_closed = lambda: self._index.release(entry)
        self._budget.fills.discard(fill)
        if fill.stale:  # written through this process while we committed
            self._index.retire(entry)
            return
        self._index.drop(key)
        self._index.add(entry)
        self._checks.check_fill(entry)
