"""``CachingStore``: a ``Store`` that keeps S3 downloads on local disk.

- a miss starts one fill per object, which every concurrent reader follows,
  and a range far ahead of the fill is fetched from the backend at once
  (``flights.py``, ``fill.py``);
- a complete fill is kept as an entry that is a hit once its bytes hashed to
  the object's digest, where one is known (``integrity.expected_digests``),
  in the background (``checks.py``);
- a hit is served from disk (``local_path``, so sendfile), re-arms the entry's
  idle timer and moves it to the LRU tail (``index.py``);
- ``cache.max_bytes`` and ``cache.min_free_bytes`` hold for every byte on disk
  (``budget.py``): a fill starts only after idle LRU entries were evicted to
  make room for it, and when no eviction can, the object is served uncached;
  entries in use are unlinked only when their last reader leaves;
- entries found at start are hashed again the same way; until an entry is
  hashed, its reads go to the backend;
- writes through this process drop the entry; a hit older than
  ``revalidate_after`` is checked with a HEAD.

Time comes from a ``Clock`` (``clock.py``), so tests can move it themselves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from ..conditions import RangeSpec
from ..config import CacheConfig
from ..errors import NotFound, UpstreamUnavailable
from ..storage.base import (
    ObjectPage,
    ObjectReader,
    Store,
    StoredObject,
    StoreStats,
    UploadSource,
)
from .budget import DiskBudget
from .checks import EntryChecks
from .clock import Clock
from .disk import CacheDir
from .flights import Flights
from .index import Entry, EntryIndex
from .readers import HitReader, labelled

__all__ = ["CacheFigures", "CachingStore", "open_caching_store"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CacheFigures:
    entries: int
    used_bytes: int
    fills: int
    evictions: int


@asynccontextmanager
async def open_caching_store(
    inner: Store, cfg: CacheConfig, origin: str, clock: Clock
) -> AsyncIterator[CachingStore]:
    """``origin`` names the backend (endpoint and bucket) the cache sits in front of;
    ``clock`` times idle expiry and revalidation."""
    store = CachingStore(inner, cfg, CacheDir(Path(cfg.dir), origin), clock)
    await store.start()
    try:
        yield store
    finally:
        await store.close()


class CachingStore:
    def __init__(self, inner: Store, cfg: CacheConfig, disk: CacheDir, clock: Clock) -> None:
        self.name = inner.name
        self._inner = inner
        self._cfg = cfg
        self._disk = disk
        self._clock = clock
        self._budget = DiskBudget(cfg.max_bytes, cfg.min_free_bytes, disk.free_bytes)
        self._index = EntryIndex(cfg, disk, self._budget, clock)
        self._checks = EntryChecks(cfg, disk, self._index)
        self._flights = Flights(inner, cfg, disk, self._index, self._budget, self._checks, clock)

    # ---- lifecycle -------------------------------------------------------

    async def start(self) -> None:
        self._checks.index_found(await asyncio.to_thread(self._disk.prepare))
        self._index.evict_to_fit()
        count, root = len(self._index), self._disk.root
        log.info("cache: %d entries, %d bytes in %s", count, self._budget.indexed, root)
        self._checks.start()

    async def close(self) -> None:
        # The fills first: one that ends now may still hand its entry to the checks.
        await self._flights.close()
        await self._checks.close()
        await self._index.close()

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
        index, fills = self._index, len(self._flights)
        return CacheFigures(len(index), on_disk, fills, index.evictions)

    async def check_ready(self) -> None:
        await self._inner.check_ready()

    def invalidate(self, key: str) -> None:
        self._flights.invalidate(key)
        self._index.drop(key)

    # ---- Store: reads ------------------------------------------------------

    async def open(self, key: str, hint: RangeSpec | None, *, head: bool = False) -> ObjectReader:
        while True:
            entry = await self._fresh_entry(key)
            if entry is not None:
                return await self._open_entry(entry, hint, head)
            following = self._flights.follow(key)
            if following is not None:
                return following
            if head:
                return labelled(await self._inner.open(key, None, head=True))
            starting = self._flights.starting(key)
            if starting is None:
                return await self._flights.miss(key, hint)
            # Another request is opening this key: join its fill rather than
            # fetching the object a second time.
            await asyncio.shield(starting)

    async def _open_entry(self, entry: Entry, hint: RangeSpec | None, head: bool) -> ObjectReader:
        if not entry.verified:
            # Not hashed yet: read the backend meanwhile, and hash this one next.
            self._checks.hash_next(entry.info.key)
            return labelled(await self._inner.open(entry.info.key, hint, head=head))
        reader = HitReader(self._index, entry)  # holds the file before anything can evict it
        await self._index.record_hit(entry)
        return reader

    async def _fresh_entry(self, key: str) -> Entry | None:
        entry = self._index.get(key)
        if entry is None or not self._due_for_check(entry):
            return entry
        try:
            current = await self._inner.open(key, None, head=True)
        except NotFound:
            self._index.drop(key)
            raise
        except UpstreamUnavailable:
            log.warning("cache: cannot revalidate %r; serving the cached copy", key)
            return entry if self._index.holds(entry) else None
        await current.aclose()
        if current.info.etag != entry.info.etag:
            self._index.drop(key)
            return None
        entry.checked_at = self._clock.monotonic()
        return entry if self._index.holds(entry) else None

    def _due_for_check(self, entry: Entry) -> bool:
        after = self._cfg.revalidate_after
        return after >= 0 and self._clock.monotonic() - entry.checked_at >= after
