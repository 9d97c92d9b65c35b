"""Entries not yet hashed: complete fills, and the entries a restart finds on disk.

An entry is a hit only once its bytes hash to what they must: the object's
digest where one is known (``integrity.expected_digests``), else what they
hashed to when first checked (recorded beside the entry for the restart
check). Until then its reads go to the backend. Entries are hashed one at a
time in the background, in a worker thread: fills as soon as they are kept
(their bytes are still in the page cache), entries found at start the most
recently used (or asked for) first, no faster than
``cache.verify_bytes_per_second``. Idle timers of entries found at start run
from the last access their data files record.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Iterable

from ..config import CacheConfig
from ..storage.base import ObjectInfo
from ..storage.integrity import SHA256, Digest, expected_digests, hash_file, size_problem
from .disk import CacheDir, StoredEntry
from .index import Entry, EntryIndex

log = logging.getLogger(__name__)


class EntryChecks:
    def __init__(self, cfg: CacheConfig, disk: CacheDir, index: EntryIndex) -> None:
        self._cfg = cfg
        self._disk = disk
        self._index = index
        # Entries waiting for their hash, the next one last; each with the
        # rate it is read at (0: as fast as the disk gives it).
        self._waiting: OrderedDict[str, tuple[Entry, int]] = OrderedDict()
        self._worker: asyncio.Task[None] | None = None
        self._found_at_start = 0

    def index_found(self, found: Iterable[StoredEntry]) -> None:
        """Index the entries found at start (oldest access first), each to be
        hashed again before it is a hit."""
        rate, trust_md5 = self._cfg.verify_bytes_per_second, self._cfg.verify_etag_md5
        for stored in found:
            content = stored.content or first_digest(stored.info, trust_md5)
            entry = Entry(stored.info, stored.path, stored.last_access, content)
            entry.persisted_access = stored.last_access
            self._index.add(entry)
            self._waiting[stored.info.key] = (entry, rate)
        self._found_at_start = len(self._waiting)

    def start(self) -> None:
        self._run()

    def check_fill(self, entry: Entry) -> None:
        """Hash the entry a fill just became, before anything else."""
        self._waiting[entry.info.key] = (entry, 0)
        self._waiting.move_to_end(entry.info.key)
        self._run()

    def hash_next(self, key: str) -> None:
        """Someone asked for ``key``: hash it next (unless it is being hashed now)."""
        if key in self._waiting:
            self._waiting.move_to_end(key)

    def _run(self) -> None:
        if self._waiting and (self._worker is None or self._worker.done()):
            self._worker = asyncio.create_task(self._check_waiting())

    async def _check_waiting(self) -> None:
        while self._waiting:
            _, (entry, rate) = self._waiting.popitem()
            if self._index.holds(entry):  # not dropped since (evicted, expired, written)
                await self._check(entry, rate)
            if self._found_at_start and not any(r for _, r in self._waiting.values()):
                self._found_at_start = 0
                log.info("cache: every entry found at start is checked")

    async def _check(self, entry: Entry, rate: int) -> None:
        expected = [entry.content] if entry.content is not None else []
        entry.readers += 1  # its file stays while we read it, even if it is dropped
        try:
            hashed = await hash_file(entry.path, expected, rate)
        except OSError as exc:
            self._index.drop_damaged(entry, f"cannot read it: {exc.strerror or exc}")
            return
        finally:
            self._index.release(entry)
        problem = (
            size_problem(hashed.size, entry.size)
            if hashed.size != entry.size
            else hashed.mismatch(expected)
        )
        if problem is not None:
            self._index.drop_damaged(entry, problem)
            return
        if entry.content is None:
            # Nothing said what the bytes must be: record what they are, for
            # the check after a restart.
            entry.content = Digest(SHA256, hashed.digests()[0].hex)
            record = self._disk.record_content
            try:
                await asyncio.to_thread(record, entry.info.key, entry.path, entry.content)
            except OSError as exc:
                log.warning("cache: cannot record the SHA-256 of %r: %s", entry.info.key, exc)
        if self._index.holds(entry):
            entry.verified = True

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)


def first_digest(info: ObjectInfo, trust_etag_md5: bool) -> Digest | None:
    """The digest ``info``'s bytes must have, if anything says."""
    return next(iter(expected_digests(info, trust_etag_md5=trust_etag_md5)), None)
