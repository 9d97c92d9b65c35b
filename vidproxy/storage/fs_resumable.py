"""tus uploads on the fs backend, under ``fs.dir/uploads/`` (no user key lives there):

    <id>.info   the record (JSON), replaced atomically (temp file, fsync, rename)
    <id>.data   the bytes so far, appended and fsynced

The record's ``offset`` is the truth: it moves only after the bytes it counts
were fsynced, and a PATCH first cuts the data file back to it (bytes a crash left
after the last save, or a PATCH that failed its checksum). The last byte renames
the data file into the store, exactly as a PUT's temp file is committed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from ..buffers import lazy_buffer
from ..errors import NotFound, ObjectDamaged
from ..files import flush_and_sync, sync_dir, write_atomically, write_in_calls
from ..media import SNIFF_BYTES
from ..tasks import finish, finish_in_thread
from ..units import MiB
from ..uploads.record import UploadRecord
from ..uploads.sha256state import Sha256
from .base import AppendSource, StoredObject
from .fs import FsStore
from .s3_resumable import OnStored, content_type_for, resume_hash

log = logging.getLogger(__name__)

UPLOADS_DIR = "uploads"
WRITE_CHUNK = 4 * MiB


class FsResumable:
    """Implements ``storage.base.ResumableStore`` beside an ``FsStore``."""

    def __init__(self, store: FsStore, expire_after: float, on_stored: OnStored) -> None:
        self._store = store
        self._dir = store.root / UPLOADS_DIR
        self._dir.mkdir(parents=True, exist_ok=True)
        self._expire_after = expire_after
        self._on_stored = on_stored

    def _info(self, upload_id: str) -> Path:
        return self._dir / f"{upload_id}.info"

    def _data(self, upload_id: str) -> Path:
        return self._dir / f"{upload_id}.data"

    async def create(self, record: UploadRecord) -> None:
        # Both, even when cancelled: the sweeper finds uploads by their record,
        # so a data file without one would stay forever.
        await finish(self._create(record))

    async def _create(self, record: UploadRecord) -> None:
        await asyncio.to_thread(self._data(record.id).touch, exist_ok=False)
        await self.save(record)

    async def load(self, upload_id: str) -> UploadRecord:
        path = self._info(upload_id)
        try:
            raw = await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise NotFound("no upload with that id") from None
        try:
            return UploadRecord.from_json(json.loads(raw))
        except (ValueError, KeyError, TypeError) as exc:
            log.error("upload record %s is unreadable: %s", upload_id, exc)
            raise ObjectDamaged("the record of this upload is damaged") from None

    async def save(self, record: UploadRecord) -> None:
        record.revision += 1
        if not record.completed:
            record.expires = time.time() + self._expire_after
        data = json.dumps(record.to_json()).encode()
        await asyncio.to_thread(write_atomically, self._info(record.id), data)

    async def records(self, idle_for: float = 0.0) -> AsyncIterator[UploadRecord]:
        written_before = time.time() - idle_for
        paths = await asyncio.to_thread(
            lambda: sorted(p for p in self._dir.glob("*.info") if _mtime(p) <= written_before)
        )
        for path in paths:
            try:
                yield await self.load(path.name.removesuffix(".info"))
            except (NotFound, ObjectDamaged):
                continue

    async def terminate(self, record: UploadRecord) -> None:
        def remove() -> None:
            self._data(record.id).unlink(missing_ok=True)
            self._info(record.id).unlink(missing_ok=True)
            sync_dir(self._dir)

        await asyncio.to_thread(remove)

    async def append(self, record: UploadRecord, source: AppendSource) -> StoredObject | None:
        path = self._data(record.id)
        hasher = resume_hash(record)
        record.sha256_lost = hasher is None
        with await asyncio.to_thread(_open_at, path, record.offset) as out:
            await self._receive(record, source, out, hasher)
        if record.length is not None and record.offset == record.length:
            return await self._finish(record, hasher)
        return None

    async def _receive(
        self, record: UploadRecord, source: AppendSource, out: BinaryIO, hasher: Sha256 | None
    ) -> None:
        # One lazy buffer: a trickling PATCH holds the bytes it sent, not 4 MiB.
        buffer = memoryview(lazy_buffer(WRITE_CHUNK))
        written = 0
        while filled := await source.readinto(buffer):
            # Waited for even when cancelled: the next PATCH must not write
            # beside a thread still writing this one's bytes.
            await finish_in_thread(_write_and_sync, out, buffer[:filled])
            if hasher is not None:
                await asyncio.to_thread(hasher.update, buffer[:filled])
            written += filled
            if not source.verified_at_end:
                await self._advance(record, written, hasher)
                written = 0
            if filled < len(buffer):
                break
        if written:
            await self._advance(record, written, hasher)

    async def _advance(self, record: UploadRecord, written: int, hasher: Sha256 | None) -> None:
        record.offset += written
        record.sha256_state = hasher.state() if hasher is not None else None
        await self.save(record)  # the bytes are fsynced: the offset may promise them

    async def finish_empty(self, record: UploadRecord) -> StoredObject:
        return await self._finish(record, resume_hash(record))

    async def _finish(self, record: UploadRecord, hasher: Sha256 | None) -> StoredObject:
        path = self._data(record.id)
        head = await asyncio.to_thread(_read_head, path)
        content_type = content_type_for(record, memoryview(head))
        if hasher is None:
            hasher = Sha256()
            await asyncio.to_thread(_hash_file, path, hasher)
        stored = await self._store.adopt(
            record.key, path, content_type, hasher.hexdigest(), create_only=record.create_only
        )
        await self._on_stored(stored)
        record.completed, record.sha256, record.etag = True, stored.sha256, stored.etag
        record.content_type = content_type
        await self.save(record)
        return stored


def _open_at(path: Path, offset: int) -> BinaryIO:
    """The data file, cut back to ``offset`` (what the record vouches for)."""
    try:
        out = open(path, "r+b")  # noqa: SIM115 (the caller's with closes it)
    except FileNotFoundError:
        raise NotFound("the bytes of this upload are gone") from None
    size = os.fstat(out.fileno()).st_size
    if size < offset:
        out.close()
        raise ObjectDamaged(f"this upload holds {size} bytes, its record {offset}")
    out.truncate(offset)
    out.seek(offset)
    return out


def _write_and_sync(out: BinaryIO, data: memoryview) -> None:
    write_in_calls(out, data)
    flush_and_sync(out)


def _read_head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(SNIFF_BYTES)


def _hash_file(path: Path, hasher: Sha256) -> None:
    with open(path, "rb") as f:
        while chunk := f.read(WRITE_CHUNK):
            hasher.update(chunk)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0  # gone meanwhile: load() says so
