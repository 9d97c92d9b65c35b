"""The index of complete entries: least recently used first, each with its idle
timer, and what their bytes take of the disk (``DiskBudget``).

- a hit moves its entry to the LRU tail and re-arms its timer
  (``Clock.call_later``); ``cache.idle_ttl`` without a hit drops it;
- a dropped entry is *retired*: its files are unlinked once its last reader
  leaves, and its bytes count against the bounds until they are gone;
- room for a fill is made by evicting idle entries, least recently used first.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from ..config import CacheConfig
from ..storage.base import ObjectInfo
from ..storage.integrity import Digest
from ..tasks import finish_in_thread
from .budget import DiskBudget
from .clock import Clock, Timer
from .disk import CacheDir, touch

log = logging.getLogger(__name__)

# Last-access times are written to disk at most this often per entry.
ACCESS_PERSIST_INTERVAL = 1.0


@dataclass(eq=False)
class Entry:
    info: ObjectInfo
    path: Path
    last_access: float  # wall clock (Clock.now)
    content: Digest | None = None  # what its bytes hashed to when filled
    verified: bool = False  # its bytes hashed to what they must (checks.py): a hit
    checked_at: float = float("-inf")  # Clock.monotonic of the last check against the backend
    persisted_access: float = 0.0
    readers: int = 0
    retired: bool = False
    timer: Timer | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        return self.info.size

    @property
    def idle(self) -> bool:
        return self.readers == 0


class EntryIndex:
    def __init__(self, cfg: CacheConfig, disk: CacheDir, budget: DiskBudget, clock: Clock) -> None:
        self._cfg = cfg
        self._disk = disk
        self._budget = budget
        self._clock = clock
        self._entries: OrderedDict[str, Entry] = OrderedDict()  # least recently used first
        self._removals: set[asyncio.Task[None]] = set()
        self.evictions = 0  # entries dropped to make room or for idleness

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Entry | None:
        return self._entries.get(key)

    def holds(self, entry: Entry) -> bool:
        """Whether ``entry`` is still the one indexed for its key."""
        return self._entries.get(entry.info.key) is entry

    def add(self, entry: Entry) -> None:
        """Index ``entry``; its timer runs from its last access, which may be past."""
        self._entries[entry.info.key] = entry
        self._budget.indexed += entry.size
        idle = self._clock.now() - entry.last_access
        self._arm_timer(entry, max(0.0, self._cfg.idle_ttl - idle))

    async def record_hit(self, entry: Entry) -> None:
        self._entries.move_to_end(entry.info.key)
        self._arm_timer(entry, self._cfg.idle_ttl)
        entry.last_access = self._clock.now()
        if entry.last_access - entry.persisted_access >= ACCESS_PERSIST_INTERVAL:
            entry.persisted_access = entry.last_access
            await asyncio.to_thread(touch, entry.path, entry.last_access)

    def _arm_timer(self, entry: Entry, delay: float) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
        entry.timer = self._clock.call_later(delay, lambda: self._expire(entry))

    def _expire(self, entry: Entry) -> None:
        if self.holds(entry):
            log.info("cache: %r idle for %ss, dropped", entry.info.key, self._cfg.idle_ttl)
            self.evictions += 1
            self.drop(entry.info.key)

    # ---- room for fills ------------------------------------------------------

    def make_room(self, size: int) -> list[asyncio.Task[None]] | None:
        """Evict idle LRU entries so a fill of ``size`` bytes fits; the unlinks
        to wait for before writing, or None if the object cannot be cached."""
        if size > self._cfg.max_object_bytes:
            return None
        victims = self._budget.victims(size, self._entries.values())
        if victims is None:
            return None
        return [self._evict(entry) for entry in victims]

    def evict_to_fit(self) -> None:
        """At start: evict until both bounds hold (all of it, if nothing else will do)."""
        lru = list(self._entries.values())
        victims = self._budget.victims(0, lru)
        for entry in lru if victims is None else victims:
            self._evict(entry)

    def _evict(self, entry: Entry) -> asyncio.Task[None]:
        log.info("cache: evicting %r (%d bytes)", entry.info.key, entry.size)
        self.evictions += 1
        unlink = self.drop(entry.info.key)
        assert unlink is not None  # only idle entries are evicted
        return unlink

    # ---- dropping, retiring, readers -----------------------------------------

    def drop(self, key: str) -> asyncio.Task[None] | None:
        """Take ``key`` out of the index; its unlink, if it starts now."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return None
        if entry.timer is not None:
            entry.timer.cancel()
        self._budget.indexed -= entry.size
        return self.retire(entry)

    def drop_damaged(self, entry: Entry, found: str) -> None:
        log.error("cache: the entry for %r (%s) is damaged: %s", entry.info.key, entry.path, found)
        if self.holds(entry):
            self.drop(entry.info.key)

    def retire(self, entry: Entry) -> asyncio.Task[None] | None:
        """Count ``entry``'s bytes as retired until they are gone from the disk."""
        entry.retired = True
        self._budget.retired += entry.size
        return self._remove_files(entry) if entry.readers == 0 else None

    def release(self, entry: Entry) -> None:
        """A reader of ``entry`` is done: a retired entry goes with its last reader."""
        entry.readers -= 1
        if entry.retired and entry.readers == 0:
            self._remove_files(entry)

    def _remove_files(self, entry: Entry) -> asyncio.Task[None]:
        task = asyncio.ensure_future(self._remove(entry))
        self._removals.add(task)
        task.add_done_callback(self._removals.discard)
        return task

    async def _remove(self, entry: Entry) -> None:
        try:
            # Through a cancel too: a fill waiting for this room passes its own on.
            await finish_in_thread(self._disk.remove, entry.info.key, entry.path)
        except OSError as exc:
            log.error("cache: cannot remove %s: %s", entry.path, exc)
        finally:
            self._budget.retired -= entry.size

    async def close(self) -> None:
        for entry in self._entries.values():
            if entry.timer is not None:
                entry.timer.cancel()
        await asyncio.gather(*self._removals, return_exceptions=True)
