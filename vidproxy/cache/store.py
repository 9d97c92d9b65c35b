"""``CachingStore``: a ``Store`` that keeps S3 downloads on local disk.

- a miss starts one fill per object (``Fill``); every concurrent reader follows
  it, and a range far ahead of the fill is fetched from the backend at once;
- a fill is hashed as it is written and kept only if it matches the object's
  digests, where any are known (``integrity.expected_digests``);
- a hit is served from disk (``local_path``, so sendfile), re-arms the entry's
  idle timer (``loop.call_later``) and moves it to the LRU tail;
- ``cache.max_bytes`` and ``cache.min_free_bytes`` hold for every byte on disk
  (``DiskBudget``): a fill starts only after idle LRU entries were evicted to
  make room for it, and when no eviction can, the object is served uncached;
  entries in use are unlinked only when their last reader leaves;
- entries found at start are hashed again in the background and are hits only
  once they match; until then their reads go to the backend;
- writes through this process drop the entry; a hit older than
  ``revalidate_after`` is checked with a HEAD.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..conditions import RangeSpec
from ..config import CacheConfig
from ..errors import NotFound, UpstreamUnavailable
from ..storage.base import (
    Chunk,
    ObjectInfo,
    ObjectPage,
    ObjectReader,
    Store,
    StoredObject,
    StoreStats,
    UploadSource,
)
from ..storage.integrity import Digest, check_file, content_record, expected_digests
from .budget import DiskBudget
from .disk import CacheDir, StoredEntry, touch
from .fill import Fill
from .readers import READAHEAD, FarRangeReader, FillReader, HitReader, far_ahead, labelled

__all__ = ["READAHEAD", "CacheFigures", "CachingStore", "open_caching_store"]

log = logging.getLogger(__name__)

# Last-access times are written to disk at most this often per entry.
ACCESS_PERSIST_INTERVAL = 1.0


@dataclass(frozen=True)
class CacheFigures:
    entries: int
    used_bytes: int
    fills: int
    evictions: int


@dataclass(eq=False)
class Entry:
    info: ObjectInfo
    path: Path
    last_access: float  # wall clock
    content: Digest | None = None  # what its bytes hashed to when filled
    verified: bool = True  # False for an entry found at start, until it is hashed again
    checked_at: float = float("-inf")  # monotonic time of the last check against the backend
    persisted_access: float = 0.0
    readers: int = 0
    retired: bool = False
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        return self.info.size

    @property
    def idle(self) -> bool:
        return self.readers == 0


@asynccontextmanager
async def open_caching_store(
    inner: Store, cfg: CacheConfig, origin: str
) -> AsyncIterator[CachingStore]:
    """``origin`` names the backend (endpoint and bucket) the cache sits in front of."""
    store = CachingStore(inner, cfg, CacheDir(Path(cfg.dir), origin))
    await store.start()
    try:
        yield store
    finally:
        await store.close()


class CachingStore:
    def __init__(self, inner: Store, cfg: CacheConfig, disk: CacheDir) -> None:
        self.name = inner.name
        self._inner = inner
        self._cfg = cfg
        self._disk = disk
        self._entries: OrderedDict[str, Entry] = OrderedDict()  # least recently used first
        self._fills: dict[str, Fill] = {}  # the fill new readers of a key join
        self._starting: dict[str, asyncio.Future[None]] = {}
        self._budget = DiskBudget(cfg.max_bytes, cfg.min_free_bytes, disk.free_bytes)
        # Entries found at start, not yet hashed again: the next one to hash last.
        self._unverified: OrderedDict[str, Entry] = OrderedDict()
        self._writes = 0  # bumped by every write through this process
        self._background: set[asyncio.Task[Any]] = set()
        self._verifier: asyncio.Task[None] | None = None
        self._evictions = 0

    # ---- lifecycle -------------------------------------------------------

    async def start(self) -> None:
        for stored in await asyncio.to_thread(self._disk.prepare):
            self._index(stored)
        self._evict_to_fit()
        count, root = len(self._entries), self._disk.root
        log.info("cache: %d entries, %d bytes in %s", count, self._budget.indexed, root)
        if self._unverified:
            self._verifier = asyncio.create_task(self._verify_found())

    async def close(self) -> None:
        if self._verifier is not None:
            self._verifier.cancel()
            await asyncio.gather(self._verifier, return_exceptions=True)
        fills = [f.task for f in self._fills.values() if f.task is not None]
        for task in fills:
            task.cancel()
        await asyncio.gather(*fills, return_exceptions=True)
        for entry in self._entries.values():
            if entry.timer is not None:
                entry.timer.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    def _index(self, stored: StoredEntry) -> None:
        """Index an entry found at start; it is a hit only once hashed again."""
        trust_md5 = self._cfg.verify_etag_md5
        content = stored.content or next(
            iter(expected_digests(stored.info, trust_etag_md5=trust_md5)), None
        )
        entry = Entry(stored.info, stored.path, stored.last_access, content, verified=False)
        entry.persisted_access = stored.last_access
        self._add(entry)
        if content is None:
            # Kept by an older vidproxy, with nothing to check it against.
            log.info("cache: dropping %r: no digest to check it against", stored.info.key)
            self._drop(stored.info.key)
        else:
            self._unverified[stored.info.key] = entry

    async def _verify_found(self) -> None:
        """Hash the entries found at start one at a time, the most recently used
        (or asked for) first, no faster than ``cache.verify_bytes_per_second``."""
        while self._unverified:
            key, entry = self._unverified.popitem()
            assert entry.content is not None
            entry.readers += 1  # its file stays while we read it, even if it is dropped
            try:
                rate = self._cfg.verify_bytes_per_second
                problem = await check_file(entry.path, entry.size, [entry.content], rate)
            finally:
                self.release(entry)
            if problem is not None:
                self.drop_damaged(entry, problem)
            elif self._entries.get(key) is entry:
                entry.verified = True
        log.info("cache: every entry found at start is checked")

    # ---- Store: writes pass through and drop the entry --------------------

    async def put(
        self, key: str, source: UploadSource, content_type: str, *, create_only: bool = False
    ) -> StoredObject:
        try:
            return await self._inner.put(key, source, content_type, create_only=create_only)
        finally:
            self.invalidate(key)

    async def delete(self, key: str) -> None:
        try:
            await self._inner.delete(key)
        finally:
            self.invalidate(key)

    async def list(self, prefix: str, after: str, limit: int) -> ObjectPage:
        return await self._inner.list(prefix, after, limit)

    @property
    def stats(self) -> StoreStats:
        return self._inner.stats

    def figures(self) -> CacheFigures:
        on_disk = self._budget.indexed + self._budget.retired
        return CacheFigures(len(self._entries), on_disk, len(self._fills), self._evictions)

    async def check_ready(self) -> None:
        await self._inner.check_ready()

    def invalidate(self, key: str) -> None:
        self._writes += 1
        self._drop(key)
        fill = self._fills.pop(key, None)
        if fill is not None:
            fill.stale = True

    # ---- Store: reads ------------------------------------------------------

    async def open(self, key: str, hint: RangeSpec | None, *, head: bool = False) -> ObjectReader:
        while True:
            entry = await self._fresh_entry(key)
            if entry is not None:
                if entry.verified:
                    return await self._hit(entry)
                # Found at start and not hashed yet: read the backend meanwhile,
                # and hash this one next (unless it is being hashed now).
                if key in self._unverified:
                    self._unverified.move_to_end(key)
                return labelled(await self._inner.open(key, hint, head=head))
            fill = self._fills.get(key)
            if fill is not None:
                return FillReader(self, fill)
            if head:
                return labelled(await self._inner.open(key, None, head=True))
            starting = self._starting.get(key)
            if starting is None:
                return await self._miss(key, hint)
            # Another request is opening this key: join its fill rather than
            # fetching the object a second time.
            await asyncio.shield(starting)

    async def _fresh_entry(self, key: str) -> Entry | None:
        entry = self._entries.get(key)
        if entry is None or not self._due_for_check(entry):
            return entry
        try:
            current = await self._inner.open(key, None, head=True)
        except NotFound:
            self._drop(key)
            raise
        except UpstreamUnavailable:
            log.warning("cache: cannot revalidate %r; serving the cached copy", key)
            return entry if self._entries.get(key) is entry else None
        await current.aclose()
        if current.info.etag != entry.info.etag:
            self._drop(key)
            return None
        entry.checked_at = time.monotonic()
        return entry if self._entries.get(key) is entry else None

    def _due_for_check(self, entry: Entry) -> bool:
        after = self._cfg.revalidate_after
        return after >= 0 and time.monotonic() - entry.checked_at >= after

    async def _hit(self, entry: Entry) -> ObjectReader:
        reader = HitReader(self, entry)  # holds the file before anything can evict it
        self._entries.move_to_end(entry.info.key)
        self._arm_timer(entry, self._cfg.idle_ttl)
        entry.last_access = time.time()
        if entry.last_access - entry.persisted_access >= ACCESS_PERSIST_INTERVAL:
            entry.persisted_access = entry.last_access
            await asyncio.to_thread(touch, entry.path)
        return reader

    async def _miss(self, key: str, hint: RangeSpec | None) -> ObjectReader:
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
        return labelled(full) if fill is None else FillReader(self, fill)

    async def _miss_far_ahead(
        self, key: str, hint: RangeSpec | None, writes_before: int, starting: asyncio.Future[None]
    ) -> ObjectReader:
        try:
            direct = await self._inner.open(key, hint)
        except BaseException:
            self._started(key, starting)
            raise
        return FarRangeReader(
            direct, lambda: self._spawn(self._fill_behind(key, writes_before, starting))
        )

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

    # ---- fills -------------------------------------------------------------

    async def _begin_fill(self, key: str, full: ObjectReader, writes_before: int) -> Fill | None:
        """Start filling from ``full`` (a whole-object GET), or None if it cannot be cached."""
        unlinks = self._make_room(full.info.size)
        if unlinks is None:
            return None
        room = asyncio.gather(*unlinks, return_exceptions=True) if unlinks else None
        expected = expected_digests(full.info, trust_etag_md5=self._cfg.verify_etag_md5)
        fill = Fill(full.info, full, self._disk.temp_path(key), expected, room)
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
        try:
            if fill.complete and not fill.stale:
                await self._keep(key, fill)
            else:
                if self._fills.get(key) is fill:
                    del self._fills[key]  # bytes that failed their check: join no more
                await asyncio.to_thread(fill.temp.unlink, missing_ok=True)
        finally:
            # Only now: requests arriving while the entry was committed joined the fill.
            if self._fills.get(key) is fill:
                del self._fills[key]
            fill.close()

    async def _keep(self, key: str, fill: Fill) -> None:
        try:
            path = await asyncio.to_thread(self._disk.commit, fill.info, fill.temp, fill.digests)
        except OSError as exc:
            log.error("cache: could not keep %r: %s", key, exc)
            await asyncio.to_thread(fill.temp.unlink, missing_ok=True)
            return
        content = Digest.from_record(content_record(fill.digests))
        entry = Entry(fill.info, path, time.time(), content, checked_at=time.monotonic())
        # The fill's descriptor is the entry's file now; its readers hold it.
        entry.readers += 1
        fill.on_closed = lambda: self.release(entry)
        self._budget.fills.discard(fill)
        if fill.stale:  # written through this process while we committed
            self._retire(entry)
            return
        self._drop(key)
        self._add(entry)

    def release_fill(self, fill: Fill) -> None:
        fill.close_reader()
        idle = fill.readers == 0 and not fill.ended
        if idle and not self._cfg.fill_on_disconnect and fill.task is not None:
            fill.task.cancel()

    # ---- bound, timers, retirement ------------------------------------------

    # builtins.list: in the class body, ``list`` is the method below.
    def _make_room(self, size: int) -> builtins.list[asyncio.Task[None]] | None:
        """Evict idle LRU entries so a fill of ``size`` bytes fits; the unlinks
        to wait for before writing, or None if the object cannot be cached."""
        if size > self._cfg.max_object_bytes:
            return None
        victims = self._budget.victims(size, self._entries.values())
        if victims is None:
            return None
        return [self._evict(entry) for entry in victims]

    def _evict_to_fit(self) -> None:
        """At start: evict until both bounds hold (all of it, if nothing else will do)."""
        lru = list(self._entries.values())
        victims = self._budget.victims(0, lru)
        for entry in lru if victims is None else victims:
            self._evict(entry)

    def _evict(self, entry: Entry) -> asyncio.Task[None]:
        log.info("cache: evicting %r (%d bytes)", entry.info.key, entry.size)
        self._evictions += 1
        unlink = self._drop(entry.info.key)
        assert unlink is not None  # only idle entries are evicted
        return unlink

    def _add(self, entry: Entry) -> None:
        key = entry.info.key
        self._entries[key] = entry
        self._budget.indexed += entry.size
        idle = time.time() - entry.last_access
        self._arm_timer(entry, max(0.0, self._cfg.idle_ttl - idle))

    def _arm_timer(self, entry: Entry, delay: float) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
        loop = asyncio.get_running_loop()
        entry.timer = loop.call_later(delay, self._expire, entry)

    def _expire(self, entry: Entry) -> None:
        if self._entries.get(entry.info.key) is entry:
            log.info("cache: %r idle for %ss, dropped", entry.info.key, self._cfg.idle_ttl)
            self._evictions += 1
            self._drop(entry.info.key)

    def drop_damaged(self, entry: Entry, found: str) -> None:
        log.error("cache: the entry for %r (%s) is damaged: %s", entry.info.key, entry.path, found)
        if self._entries.get(entry.info.key) is entry:
            self._drop(entry.info.key)

    def _drop(self, key: str) -> asyncio.Task[None] | None:
        """Take ``key`` out of the index; its unlink, if it starts now."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        self._unverified.pop(key, None)
        if entry.timer is not None:
            entry.timer.cancel()
        self._budget.indexed -= entry.size
        return self._retire(entry)

    def _retire(self, entry: Entry) -> asyncio.Task[None] | None:
        """Count ``entry``'s bytes as retired until they are gone from the disk."""
        entry.retired = True
        self._budget.retired += entry.size
        return self._remove_files(entry) if entry.readers == 0 else None

    def release(self, entry: Entry) -> None:
        entry.readers -= 1
        if entry.retired and entry.readers == 0:
            self._remove_files(entry)

    def _remove_files(self, entry: Entry) -> asyncio.Task[None]:
        async def remove() -> None:
            try:
                await asyncio.to_thread(self._disk.remove, entry.info.key, entry.path)
            except OSError as exc:
                log.error("cache: cannot remove %s: %s", entry.path, exc)
            finally:
                self._budget.retired -= entry.size

        return self._spawn(remove())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task
