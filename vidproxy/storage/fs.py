"""The embedded ``fs`` backend: videos in a local directory, kept across restarts.

Layout under ``dir``::

    objects/ab/<sha256(key)>.json     the committed metadata, naming its data file
    objects/ab/<sha256(key)>.<ulid>   one immutable data file per version
    tmp/                              uploads in progress (cleared at start)

A write goes to ``tmp/``, is fsynced and renamed next to the metadata; the
atomic rename of the metadata file is the commit. A reader that opened an old
version keeps it until it is done, so an overwrite never mixes two bodies.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from ulid import ULID

from ..buffers import lazy_buffer
from ..conditions import ByteRange, RangeSpec
from ..errors import NotFound, ObjectDamaged, PreconditionFailed, UpstreamUnavailable
from ..files import flush_and_sync, read_file, sync_dir, write_atomically, write_in_calls
from ..keys import key_digest
from ..tasks import finish, finish_in_thread
from ..units import MiB
from .base import ObjectInfo, ObjectPage, StoredObject, StoreStats, UploadSource
from .integrity import size_problem
from .locks import KeyLocks

log = logging.getLogger(__name__)

WRITE_CHUNK = 4 * MiB
READ_CHUNK = 1 * MiB
META_SUFFIX = ".json"


@asynccontextmanager
async def open_fs_store(directory: str) -> AsyncIterator[FsStore]:
    store = FsStore(Path(directory))
    await asyncio.to_thread(store.prepare)
    yield store


class FsStore:
    name = "fs"

    def __init__(self, root: Path) -> None:
        self.stats = StoreStats()  # nothing upstream: stays zero
        self._root = root
        self._objects = root / "objects"
        self._tmp = root / "tmp"
        # One writer per key at a time keeps the version-file bookkeeping exact.
        # It also makes create-only writes create-only: ``_commit`` looks and commits under it.
        self._lock = KeyLocks()
        # Data files with open readers, and those replaced or deleted meanwhile:
        # a retired file is unlinked when its last reader closes.
        self._readers: Counter[Path] = Counter()
        self._retired: set[Path] = set()

    def prepare(self) -> None:
        """Create the directories and drop what a crash left behind."""
        self._objects.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)
        for leftover in self._tmp.iterdir():
            leftover.unlink(missing_ok=True)
        for meta in self._objects.glob(f"*/*{META_SUFFIX}.tmp"):
            meta.unlink(missing_ok=True)
        self._remove_unreferenced_versions()

    def _remove_unreferenced_versions(self) -> None:
        metas = map(_load_meta, self._objects.glob(f"*/*{META_SUFFIX}"))
        referenced = {meta["data"] for meta in metas if meta}
        for path in self._objects.glob("*/*.*"):
            if path.suffix != META_SUFFIX and path.name not in referenced:
                path.unlink(missing_ok=True)

    async def check_ready(self) -> None:
        if not await asyncio.to_thread(os.access, self._objects, os.W_OK):
            raise UpstreamUnavailable("the data directory is not writable")

    def _meta_path(self, key: str) -> Path:
        digest = key_digest(key)
        return self._objects / digest[:2] / f"{digest}{META_SUFFIX}"

    def _load_version(self, key: str) -> tuple[ObjectInfo, Path, int | None]:
        """The key's metadata, its data file and that file's size (None: missing)."""
        meta_path = self._meta_path(key)
        meta = _load_meta(meta_path)
        if meta is None or meta["key"] != key:
            raise NotFound("no video under that key")
        path = meta_path.with_name(meta["data"])
        try:
            size: int | None = path.stat().st_size
        except FileNotFoundError:
            size = None
        return ObjectInfo.from_record(meta), path, size

    async def open(self, key: str, hint: RangeSpec | None, *, head: bool = False) -> FsReader:
        # Under the key's lock, so no commit can unlink the version between our
        # reading its metadata and counting ourselves as its reader.
        async with self._lock(key):
            info, path, size = await asyncio.to_thread(self._load_version, key)
            if size != info.size:
                # Changed behind our back (a disk error, an operator): its bytes
                # are not the version the metadata describes.
                raise damaged(info, path, size_problem(size, info.size))
            self._readers[path] += 1
        return FsReader(self, info, path)

    async def _release(self, path: Path) -> None:
        self._readers[path] -= 1
        if self._readers[path] == 0:
            del self._readers[path]
            if path in self._retired:
                self._retired.discard(path)
                await finish_in_thread(path.unlink, missing_ok=True)

    async def _retire(self, path: Path | None) -> None:
        """Unlink a replaced or deleted version now, or once its readers are done."""
        if path is None:
            return
        if self._readers[path] > 0:
            self._retired.add(path)
        else:
            await finish_in_thread(path.unlink, missing_ok=True)

    async def put(
        self, key: str, source: UploadSource, content_type: str, *, create_only: bool = False
    ) -> StoredObject:
        if create_only and await asyncio.to_thread(_load_meta, self._meta_path(key)) is not None:
            raise PreconditionFailed("a video already exists under that key")
        version = f"{key_digest(key)}.{ULID()}"
        tmp_path = self._tmp / version
        try:
            size = await self._receive(source, tmp_path)
            sha256 = source.sha256()
            info = ObjectInfo(
                key, size, f'"{sha256[:32]}"', datetime.now(UTC), content_type, sha256
            )
            meta = {**info.to_record(), "data": version}
            async with self._lock(key):
                await self._change(partial(self._commit, key, tmp_path, meta, create_only))
        finally:
            await finish_in_thread(tmp_path.unlink, missing_ok=True)
        return StoredObject(key, size, info.etag, content_type, sha256)

    @property
    def root(self) -> Path:
        return self._root

    async def adopt(
        self, key: str, path: Path, content_type: str, sha256: str, *, create_only: bool = False
    ) -> StoredObject:
        """Make ``path``, a whole fsynced file on the same filesystem (a finished
        tus upload), the key's new version, as ``put`` commits its temp file."""
        size = (await asyncio.to_thread(path.stat)).st_size
        version = f"{key_digest(key)}.{ULID()}"
        info = ObjectInfo(key, size, f'"{sha256[:32]}"', datetime.now(UTC), content_type, sha256)
        meta = {**info.to_record(), "data": version}
        async with self._lock(key):
            await self._change(partial(self._commit, key, path, meta, create_only))
        return StoredObject(key, size, info.etag, content_type, sha256)

    async def _receive(self, source: UploadSource, path: Path) -> int:
        size = 0
        # One buffer throughout: each write is done before the next readinto. Lazy:
        # a trickling upload holds the bytes it sent, not a whole WRITE_CHUNK.
        buffer = memoryview(lazy_buffer(WRITE_CHUNK))
        # Each thread is waited for even when the upload is cancelled: one that
        # went on would create or write the file after put's unlink.
        opening = asyncio.to_thread(open, path, "wb")
        with await finish(opening, if_cancelled=lambda out: out.close()) as out:
            while filled := await source.readinto(buffer):
                await finish_in_thread(write_in_calls, out, buffer[:filled])
                size += filled
            await finish_in_thread(flush_and_sync, out)
        return size

    async def _change(self, change: Callable[[], Path | None]) -> None:
        """Run ``change`` (a commit or a removal) in a thread and retire the version
        it replaced, both even when cancelled: a cancel between the two would
        leave that version's file on disk, named by nothing."""

        async def change_and_retire() -> None:
            await self._retire(await asyncio.to_thread(change))

        await finish(change_and_retire())

    def _commit(
        self, key: str, tmp_path: Path, meta: dict[str, Any], create_only: bool
    ) -> Path | None:
        """Make ``meta`` the key's version; returns the replaced data file, if any."""
        meta_path = self._meta_path(key)
        meta_path.parent.mkdir(exist_ok=True)
        old = _load_meta(meta_path)
        if create_only and old is not None:
            raise PreconditionFailed("a video already exists under that key")
        os.replace(tmp_path, meta_path.with_name(meta["data"]))
        write_atomically(meta_path, json.dumps(meta).encode())
        sync_dir(meta_path.parent)
        return None if old is None else meta_path.with_name(old["data"])

    async def delete(self, key: str) -> None:
        async with self._lock(key):
            await self._change(partial(self._remove, key))

    def _remove(self, key: str) -> Path | None:
        """Drop the key's metadata; returns its data file, if it had one."""
        meta_path = self._meta_path(key)
        meta = _load_meta(meta_path)
        if meta is None or meta["key"] != key:
            return None
        meta_path.unlink(missing_ok=True)
        sync_dir(meta_path.parent)
        return meta_path.with_name(meta["data"])

    async def list(self, prefix: str, after: str, limit: int) -> ObjectPage:
        return await asyncio.to_thread(self._list, prefix, after, limit)

    def _list(self, prefix: str, after: str, limit: int) -> ObjectPage:
        metas = (_load_meta(p) for p in self._objects.glob(f"*/*{META_SUFFIX}"))
        keys = sorted(
            (m["key"], m) for m in metas if m and m["key"].startswith(prefix) and m["key"] > after
        )
        page = [ObjectInfo.from_record(m) for _, m in keys[:limit]]
        next_after = page[-1].key if len(keys) > limit else None
        return ObjectPage(page, next_after)


class FsReader:
    cache_status: str | None = None

    def __init__(self, store: FsStore, info: ObjectInfo, path: Path) -> None:
        self._store = store
        self._open = True
        self.info = info
        self.local_path = path

    async def stream(self, byte_range: ByteRange | None) -> AsyncIterator[bytes]:
        return read_file(self.local_path, byte_range or ByteRange(0, self.info.size))

    async def aclose(self) -> None:
        if self._open and self.local_path is not None:
            self._open = False
            await self._store._release(self.local_path)

    def damaged(self, found: str) -> ObjectDamaged:
        return damaged(self.info, self.local_path, found)


def damaged(info: ObjectInfo, path: Path | None, found: str) -> ObjectDamaged:
    log.error("fs: the data of %r (%s) is damaged: %s", info.key, path, found)
    return ObjectDamaged(f"the stored bytes of this video are damaged: {found}")


def _load_meta(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_bytes())  # type: ignore[no-any-return]
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable metadata %s: %s", path.name, exc)
        return None
