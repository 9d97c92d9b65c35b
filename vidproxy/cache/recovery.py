"""The entries a restart finds on disk: indexed at once, hits only once hashed again.

Their idle timers run from the last access their data files record. Until an
entry's bytes hash to what they did when it was filled, its reads go to the
backend; they are hashed one at a time in the background, the most recently
used (or asked for) first, no faster than ``cache.verify_bytes_per_second``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Iterable

from ..config import CacheConfig
from ..storage.integrity import check_file, expected_digests
from .disk import StoredEntry
from .index import Entry, EntryIndex

log = logging.getLogger(__name__)


class Recovery:
    def __init__(self, cfg: CacheConfig, index: EntryIndex) -> None:
        self._cfg = cfg
        self._index = index
        # Entries found at start, not yet hashed again: the next one to hash last.
        self._unverified: OrderedDict[str, Entry] = OrderedDict()
        self._verifier: asyncio.Task[None] | None = None

    def index_found(self, found: Iterable[StoredEntry]) -> None:
        """Index the entries found at start (oldest access first)."""
        for stored in found:
            self._index_one(stored)

    def _index_one(self, stored: StoredEntry) -> None:
        trust_md5 = self._cfg.verify_etag_md5
        content = stored.content or next(
            iter(expected_digests(stored.info, trust_etag_md5=trust_md5)), None
        )
        entry = Entry(stored.info, stored.path, stored.last_access, content, verified=False)
        entry.persisted_access = stored.last_access
        self._index.add(entry)
        if content is None:
            # Kept by an older vidproxy, with nothing to check it against.
            log.info("cache: dropping %r: no digest to check it against", stored.info.key)
            self._index.drop(stored.info.key)
        else:
            self._unverified[stored.info.key] = entry

    def start(self) -> None:
        if self._unverified:
            self._verifier = asyncio.create_task(self._verify_found())

    def hash_next(self, key: str) -> None:
        """Someone asked for ``key``: hash it next (unless it is being hashed now)."""
        if key in self._unverified:
            self._unverified.move_to_end(key)

    async def _verify_found(self) -> None:
        while self._unverified:
            _, entry = self._unverified.popitem()
            if self._index.holds(entry):  # not dropped since (evicted, expired, written)
                await self._verify(entry)
        log.info("cache: every entry found at start is checked")

    async def _verify(self, entry: Entry) -> None:
        assert entry.content is not None
        entry.readers += 1  # its file stays while we read it, even if it is dropped
        try:
            rate = self._cfg.verify_bytes_per_second
            problem = await check_file(entry.path, entry.size, [entry.content], rate)
        finally:
            self._index.release(entry)
        if problem is not None:
            self._index.drop_damaged(entry, problem)
        elif self._index.holds(entry):
            entry.verified = True

    async def close(self) -> None:
        if self._verifier is not None:
            self._verifier.cancel()
            await asyncio.gather(self._verifier, return_exceptions=True)
