"""tus uploads on S3: the record, the tail and the multipart upload, all in the bucket.

Per upload, under ``.vidproxy/uploads/``::

    <id>.info         the record (JSON), written with If-Match on its last ETag
    <id>.tail.<rev>   bytes not yet in a part (shorter than one), as tusd's ``.part``
    <id>.stage.<rev>.<n>  part n of a PATCH with Upload-Checksum, until it matched

and one multipart upload on the video's own key, created when the first full
part is ready (so the content type can be sniffed from the first bytes, and an
upload smaller than a part ends as one PutObject of its tail). Parts are sent in
order, numbered from 1 without gaps (rclone needs both); each part sent is saved
in the record, so the offset a client sees is always durable. A part uploaded
after the last save (a crash) is uploaded again, with the same bytes, by the
PATCH that resumes at the saved offset.

A PATCH with ``Upload-Checksum`` uploads no part before its whole body matched:
its full parts are first staged as objects, then promoted (read back and sent as
parts, in order) once it did, and removed either way. S3 stays the only state,
and a part number is only ever sent with final bytes: ``rclone serve s3``
refuses a part number again with other bytes, and does not implement
UploadPartCopy (it answers without an ETag), hence the read back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, nullcontext
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any, cast

from ..errors import (
    NotFound,
    ObjectDamaged,
    OffsetMismatch,
    PreconditionFailed,
    TooLarge,
    UploadLocked,
    UpstreamError,
    UpstreamUnavailable,
)
from ..keys import RESERVED_PREFIX
from ..media import SNIFF_BYTES, choose_content_type
from ..s3limits import MAX_PARTS
from ..uploads.record import Part, UploadRecord
from ..uploads.sha256state import Sha256
from .base import AppendSource, StoredObject
from .multipart import PartBody, PartBuffers
from .parts import PartPlan
from .s3 import SHA256_METADATA, S3Store, multipart_metadata
from .s3api import WriteConditions

if TYPE_CHECKING:
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

log = logging.getLogger(__name__)

RECORDS_PREFIX = RESERVED_PREFIX + "uploads/"
RECORD_SUFFIX = ".info"
RECORD_READ_ATTEMPTS = 3

# Called with every object a finished upload made: the cache drops its entry, the
# digest record is written.
OnStored = Callable[[StoredObject], Awaitable[None]]


def record_key(upload_id: str) -> str:
    return f"{RECORDS_PREFIX}{upload_id}{RECORD_SUFFIX}"


def tail_key(upload_id: str, revision: int) -> str:
    return f"{RECORDS_PREFIX}{upload_id}.tail.{revision}"


def stage_key(upload_id: str, revision: int, number: int) -> str:
    return f"{RECORDS_PREFIX}{upload_id}.stage.{revision}.{number}"


def resume_hash(record: UploadRecord) -> Sha256 | None:
    """The SHA-256 of the upload's first ``offset`` bytes, or None (lost: the
    digest is recomputed from the object at the end)."""
    if record.sha256_lost:
        return None
    if record.sha256_state is None:
        return Sha256() if record.offset == 0 else None
    try:
        return Sha256(record.sha256_state)
    except ValueError:
        return None


def content_type_for(record: UploadRecord, head: memoryview) -> str:
    return record.content_type or choose_content_type(None, record.key, bytes(head[:SNIFF_BYTES]))


class S3Resumable:
    """Implements ``storage.base.ResumableStore`` on an ``S3Store``'s bucket."""

    def __init__(self, store: S3Store, expire_after: float, on_stored: OnStored) -> None:
        self._store = store
        self._client = store.client
        self._bucket = store.bucket
        self._cfg = store.config
        self._expire_after = expire_after
        self._on_stored = on_stored

    # ---- records ------------------------------------------------------------

    async def create(self, record: UploadRecord) -> None:
        await self._put_record(record, {"IfNoneMatch": "*"})

    async def load(self, upload_id: str) -> UploadRecord:
        # rclone's overwrites are not atomic: a read racing the PATCH that rewrites
        # the record can get a cut or mixed body. A few reads give a whole one.
        for _ in range(RECORD_READ_ATTEMPTS - 1):
            try:
                return await self._load_once(upload_id)
            except (UpstreamUnavailable, ObjectDamaged):
                continue
        return await self._load_once(upload_id)

    async def _load_once(self, upload_id: str) -> UploadRecord:
        async with self._store.call("GetObject"):
            response = await self._client.get_object(Bucket=self._bucket, Key=record_key(upload_id))
            async with response["Body"] as body:
                raw = await body.read()
        try:
            record = UploadRecord.from_json(json.loads(raw))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("upload record %s is unreadable: %s", upload_id, exc)
            raise ObjectDamaged("the record of this upload is damaged") from None
        # The next write is conditional on this tag (If-Match): a replica that
        # wrote in between makes ours fail instead of being overwritten.
        record.stored_etag = str(response.get("ETag", "")) or None
        return record

    async def save(self, record: UploadRecord) -> None:
        etag = record.stored_etag
        await self._put_record(record, {"IfMatch": etag} if etag else {})

    async def _put_record(self, record: UploadRecord, conditions: WriteConditions) -> None:
        record.revision += 1
        if not record.completed:
            record.expires = time.time() + self._expire_after
        body = json.dumps(record.to_json()).encode()
        try:
            async with self._store.call("PutObject"):
                response = await self._client.put_object(
                    Bucket=self._bucket,
                    Key=record_key(record.id),
                    Body=body,
                    ContentType="application/json",
                    **conditions,
                )
        except PreconditionFailed:
            # Another replica wrote the record since we read it: it owns the upload now.
            raise UploadLocked("another request wrote this upload meanwhile; ask HEAD") from None
        record.stored_etag = str(response.get("ETag", "")) or None

    async def records(self, idle_for: float = 0.0) -> AsyncIterator[UploadRecord]:
        # The listing's LastModified picks the idle ones: only they are read.
        written_before = time.time() - idle_for
        async for item in self._list_objects(RECORDS_PREFIX):
            key = str(item["Key"])
            if not key.endswith(RECORD_SUFFIX) or _written_at(item) > written_before:
                continue
            upload_id = key[len(RECORDS_PREFIX) : -len(RECORD_SUFFIX)]
            try:
                yield await self.load(upload_id)
            except (NotFound, ObjectDamaged):
                continue

    async def _list(self, prefix: str) -> AsyncIterator[str]:
        async for item in self._list_objects(prefix):
            yield str(item["Key"])

    async def _list_objects(self, prefix: str) -> AsyncIterator[Mapping[str, Any]]:
        params: dict[str, Any] = {"Bucket": self._bucket, "Prefix": prefix}
        while True:
            async with self._store.call("ListObjectsV2"):
                page = await self._client.list_objects_v2(**params)
            for item in page.get("Contents", []):
                yield item
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return
            params["ContinuationToken"] = token

    async def terminate(self, record: UploadRecord) -> None:
        if record.s3_upload_id is not None:
            try:
                async with self._store.call("AbortMultipartUpload"):
                    await self._client.abort_multipart_upload(
                        Bucket=self._bucket, Key=record.key, UploadId=record.s3_upload_id
                    )
            except (NotFound, UpstreamError):
                pass  # already gone (moto answers 500 to some of these)
        # Every object of the upload, stale tails and staged parts a crash left included.
        async for key in self._list(f"{RECORDS_PREFIX}{record.id}."):
            if key != record_key(record.id):
                await self._delete(key)
        await self._delete(record_key(record.id))

    async def _delete(self, key: str) -> None:
        async with self._store.call("DeleteObject"):
            await self._client.delete_object(Bucket=self._bucket, Key=key)

    async def live_multipart_ids(self) -> set[str]:
        """S3 upload ids of unexpired tus uploads: the stale-upload sweep keeps them."""
        return {
            r.s3_upload_id
            async for r in self.records()
            if r.s3_upload_id is not None and not r.is_expired()
        }

    # ---- bytes --------------------------------------------------------------

    async def append(self, record: UploadRecord, source: AppendSource) -> StoredObject | None:
        return await _Append(self, record, source).run()

    async def finish_empty(self, record: UploadRecord) -> StoredObject:
        appending = _Append(self, record, None)
        return await appending.finish_from_tail()

    # Used by _Append: the small S3 calls, each behind the error boundary.

    async def read_tail(self, record: UploadRecord, into: memoryview) -> int:
        if not record.tail_size or record.tail_key is None:
            return 0
        return await self.read_into(record.tail_key, into[: record.tail_size])

    async def read_into(self, key: str, into: memoryview) -> int:
        """Read the object ``key``, which holds exactly ``len(into)`` bytes."""
        async with self._store.call("GetObject"):
            response = await self._client.get_object(Bucket=self._bucket, Key=key)
            async with response["Body"] as body:
                data = await body.read()
        if len(data) != len(into):
            raise ObjectDamaged(f"{key} holds {len(data)} bytes, not {len(into)}")
        into[:] = data
        return len(data)

    async def put_staged(self, key: str, data: memoryview) -> None:
        async with self._store.call("PutObject"):
            await self._client.put_object(
                Bucket=self._bucket, Key=key, Body=cast(IO[bytes], PartBody(data))
            )

    async def put_tail(self, record: UploadRecord, data: memoryview) -> str:
        key = tail_key(record.id, record.revision + 1)
        async with self._store.call("PutObject"):
            await self._client.put_object(Bucket=self._bucket, Key=key, Body=bytes(data))
        return key

    async def drop_object(self, key: str | None) -> None:
        if key is None:
            return
        try:
            await self._delete(key)
        except (NotFound, UpstreamError, UpstreamUnavailable) as exc:
            log.warning("could not remove %s: %s", key, exc.message)

    async def create_multipart(self, record: UploadRecord, content_type: str) -> str:
        async with self._store.call("CreateMultipartUpload"):
            response = await self._client.create_multipart_upload(
                Bucket=self._bucket,
                Key=record.key,
                ContentType=content_type,
                Metadata=multipart_metadata(None),
            )
        return str(response["UploadId"])

    async def upload_part(self, record: UploadRecord, number: int, data: memoryview) -> Part:
        try:
            async with self._store.call("UploadPart"):
                response = await self._client.upload_part(
                    Bucket=self._bucket,
                    Key=record.key,
                    UploadId=self._upload_id_of(record),
                    PartNumber=number,
                    # A Payload streams the buffer without a copy; botocore reads it as a file.
                    Body=cast(IO[bytes], PartBody(data)),
                )
        except (NotFound, UpstreamError):
            await self._raise_if_taken_over(record)
            raise
        self._store.count_part()
        return Part(number, str(response["ETag"]), len(data))

    async def complete(self, record: UploadRecord) -> str:
        """CompleteMultipartUpload; returns the ETag it answered."""
        parts: list[CompletedPartTypeDef] = [
            {"PartNumber": p.number, "ETag": p.etag} for p in record.parts
        ]
        try:
            async with (
                self._commit(record) as conditions,
                self._store.call("CompleteMultipartUpload"),
            ):
                response = await self._client.complete_multipart_upload(
                    Bucket=self._bucket,
                    Key=record.key,
                    UploadId=self._upload_id_of(record),
                    MultipartUpload={"Parts": parts},
                    **conditions,
                )
        except (NotFound, UpstreamError):
            await self._raise_if_taken_over(record)
            raise
        return str(response["ETag"])

    @staticmethod
    def _upload_id_of(record: UploadRecord) -> str:
        assert record.s3_upload_id is not None, "parts go to a started multipart upload"
        return record.s3_upload_id

    def _commit(self, record: UploadRecord) -> AbstractAsyncContextManager[WriteConditions]:
        """What the last write carries: create-only as a PUT's (a look under the
        key's lock, then If-None-Match), or nothing."""
        if record.create_only:
            return self._store.create_only_commit(record.key)
        return nullcontext({})

    async def _raise_if_taken_over(self, record: UploadRecord) -> None:
        """An S3 call on the multipart upload failed: if another request (another
        replica) wrote the record meanwhile, it finished or ended the upload (moto
        answers 500, AWS 404 to a part for a completed upload): that is a 409."""
        try:
            async with self._store.call("HeadObject"):
                head = await self._client.head_object(
                    Bucket=self._bucket, Key=record_key(record.id)
                )
        except NotFound:
            raise OffsetMismatch("another request ended this upload") from None
        if str(head.get("ETag", "")) != record.stored_etag:
            raise OffsetMismatch("another request moved this upload on; ask HEAD") from None

    async def record_digest(self, record: UploadRecord, completed: str, sha256: str) -> str:
        """The SHA-256 record beside the object (S3 fixed its metadata at Create);
        returns the ETag HEAD and GET show."""
        return await self._store.record_completed(record.key, completed, record.parts_size, sha256)

    async def put_whole(
        self, record: UploadRecord, data: memoryview, content_type: str, sha256: str
    ) -> str:
        async with self._commit(record) as conditions, self._store.call("PutObject"):
            response = await self._client.put_object(
                Bucket=self._bucket,
                Key=record.key,
                Body=bytes(data),
                ContentType=content_type,
                Metadata={SHA256_METADATA: sha256},
                **conditions,
            )
        return str(response["ETag"])

    async def sha256_of_object(self, key: str) -> str:
        """Read the object back: the digest when the hash state was lost."""
        digest = Sha256()
        reader = await self._store.open(key, None)
        try:
            async for chunk in await reader.stream(None):
                await asyncio.to_thread(digest.update, chunk)
        finally:
            await reader.aclose()
        return digest.hexdigest()

    async def stored(self, stored: StoredObject) -> None:
        await self._on_stored(stored)

    @property
    def concurrency(self) -> int:
        return self._cfg.upload_concurrency

    def plan(self, record: UploadRecord) -> PartPlan:
        return PartPlan(self._cfg.part_size, record.plan_size, self._cfg.equal_parts)


class _Append:
    """One PATCH body into parts and a tail, saving the record as parts land."""

    def __init__(self, s3: S3Resumable, record: UploadRecord, source: AppendSource | None):
        self._s3 = s3
        self._record = record
        self._source = source
        self._verified_at_end = source is not None and source.verified_at_end
        self._plan = s3.plan(record)
        self._buffers = PartBuffers(s3.concurrency + 1)
        self._hash = resume_hash(record)
        if self._hash is None:
            record.sha256_lost = True
        # Parts in flight, in order, each with the hash state at its end; the lander
        # saves each in the record as soon as it and all before it are stored, while
        # the body goes on arriving.
        # None instead of a task marks the end of the body.
        self._inflight: deque[tuple[asyncio.Task[Part] | None, str | None]] = deque()
        self._slots = asyncio.Semaphore(s3.concurrency)
        self._arrived = asyncio.Event()
        self._lander: asyncio.Task[None] | None = None
        self._old_tails: list[str] = []
        # With a checksum: the staged objects put (or being put), and the staged
        # parts stored (etag: the staged key), each with the hash state at its end.
        self._staged_keys: list[str] = []
        self._staged: list[tuple[Part, str | None]] = []

    async def run(self) -> StoredObject | None:
        assert self._source is not None
        record = self._record
        number = len(record.parts) + 1
        buffer = await self._buffers.take(self._plan.size_of(number))
        owned = True  # False while the buffer belongs to a part's task
        try:
            filled = await self._s3.read_tail(record, buffer)
            tail_bytes, hashed = filled, filled
            while True:
                filled += await self._source.readinto(buffer[filled:])
                if filled and number > MAX_PARTS:  # past the plan's capacity
                    raise TooLarge(f"one upload holds at most {self._plan.capacity()} bytes")
                if filled < len(buffer):
                    break
                await self._feed_hash(buffer[hashed:filled])
                owned = False  # the part's task gives it back once sent
                await self._send_part(number, buffer)
                number += 1
                buffer = await self._buffers.take(self._plan.size_of(min(number, MAX_PARTS)))
                owned = True
                filled = hashed = tail_bytes = 0
            await self._feed_hash(buffer[hashed:filled])
            await self._land_all()
            await self._promote_staged()
            return await self._settle(number, buffer[:filled], filled > tail_bytes)
        except BaseException:
            await self._cancel_inflight()
            await self._drop_staged()
            raise
        finally:
            if owned:
                self._buffers.give_back(buffer)

    async def _feed_hash(self, data: memoryview) -> None:
        if self._hash is not None and len(data):
            await asyncio.to_thread(self._hash.update, data)

    def _hash_state(self) -> str | None:
        return self._hash.state() if self._hash is not None else None

    async def _send_part(self, number: int, buffer: memoryview) -> None:
        record = self._record
        if record.s3_upload_id is None:
            # The first full part starts at byte 0: sniff from it, then start S3's
            # upload (once the checksum matched, for a staged PATCH).
            record.content_type = content_type_for(record, buffer)
            if not self._verified_at_end:
                await self._start_multipart()
        if self._lander is None:
            self._lander = asyncio.ensure_future(self._land_in_order())
        elif self._lander.done():
            await self._lander  # it failed: raise that
        await self._slots.acquire()
        task = asyncio.ensure_future(self._upload(number, buffer))
        self._inflight.append((task, self._hash_state()))
        self._arrived.set()

    async def _start_multipart(self) -> None:
        record = self._record
        assert record.content_type is not None, "sniffed from the first part"
        record.s3_upload_id = await self._s3.create_multipart(record, record.content_type)
        await self._s3.save(record)  # so an abort can always find it

    async def _upload(self, number: int, buffer: memoryview) -> Part:
        try:
            if not self._verified_at_end:
                return await self._s3.upload_part(self._record, number, buffer)
            key = stage_key(self._record.id, self._record.revision, number)
            self._staged_keys.append(key)  # before the put: a cut one is removed too
            await self._s3.put_staged(key, buffer)
            return Part(number, key, len(buffer))
        finally:
            self._buffers.give_back(buffer)

    async def _promote_staged(self) -> None:
        """The checksum matched: each staged part, in order, read back and sent as
        the part it is, the record saved after each (as unstaged parts are)."""
        for staged, state in self._staged:
            if self._record.s3_upload_id is None:
                await self._start_multipart()
            buffer = await self._buffers.take(staged.size)
            try:
                await self._s3.read_into(staged.etag, buffer)
                part = await self._s3.upload_part(self._record, staged.number, buffer)
            finally:
                self._buffers.give_back(buffer)
            self._land(part, state)
            await self._s3.save(self._record)
        self._staged.clear()
        await self._drop_staged()

    async def _drop_staged(self) -> None:
        for key in self._staged_keys:
            await self._s3.drop_object(key)
        self._staged_keys.clear()

    async def _land_in_order(self) -> None:
        while True:
            while not self._inflight:
                self._arrived.clear()
                await self._arrived.wait()
            task, state = self._inflight[0]
            if task is None:
                return
            part = await task
            self._inflight.popleft()
            self._slots.release()
            if self._verified_at_end:
                self._staged.append((part, state))  # the record waits for the checksum
                continue
            self._land(part, state)
            await self._s3.save(self._record)  # the offset now promises this part

    def _land(self, part: Part, state: str | None) -> None:
        record = self._record
        record.parts.append(part)
        if record.tail_key is not None:
            self._old_tails.append(record.tail_key)
        record.tail_key, record.tail_size = None, 0
        record.offset = record.parts_size
        record.sha256_state = state

    async def _land_all(self) -> None:
        if self._lander is None:
            return
        self._inflight.append((None, None))
        self._arrived.set()
        await self._lander
        self._inflight.clear()

    async def _cancel_inflight(self) -> None:
        tasks: list[asyncio.Future[Any]] = [t for t, _ in self._inflight if t is not None]
        if self._verified_at_end:
            # Staged puts run to their end: a cancelled one may still be written by
            # the server (rclone) after _drop_staged removed it. At most
            # ``upload_concurrency`` parts.
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._lander is not None:
            tasks.append(self._lander)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._inflight.clear()

    async def _settle(self, number: int, rest: memoryview, grew: bool) -> StoredObject | None:
        """After the body: finish the upload, or keep what is left as the tail."""
        record = self._record
        if record.length is not None and record.parts_size + len(rest) == record.length:
            return await self._finish(number, rest)
        if grew:
            old = record.tail_key
            record.tail_key = await self._s3.put_tail(record, rest)
            record.tail_size = len(rest)
            if old is not None:
                self._old_tails.append(old)
        record.offset = record.parts_size + record.tail_size
        record.sha256_state = self._hash_state()
        await self._s3.save(record)
        await self._drop_old_tails()
        return None

    async def _drop_old_tails(self) -> None:
        for key in self._old_tails:
            await self._s3.drop_object(key)
        self._old_tails.clear()

    async def finish_from_tail(self) -> StoredObject:
        record = self._record
        buffer = await self._buffers.take(max(record.tail_size, 1))
        try:
            filled = await self._s3.read_tail(record, buffer)
            return await self._finish(len(record.parts) + 1, buffer[:filled])
        finally:
            self._buffers.give_back(buffer)

    async def _finish(self, number: int, rest: memoryview) -> StoredObject:
        record = self._record
        if record.s3_upload_id is None:
            content_type = content_type_for(record, rest)
            sha256 = self._hash.hexdigest() if self._hash is not None else _sha256_of(rest)
            etag = await self._s3.put_whole(record, rest, content_type, sha256)
        else:
            content_type = record.content_type or content_type_for(record, rest)
            if len(rest):
                record.parts.append(await self._s3.upload_part(record, number, rest))
            completed = await self._s3.complete(record)
            sha256 = (
                self._hash.hexdigest()
                if self._hash is not None
                else await self._s3.sha256_of_object(record.key)
            )
            etag = await self._s3.record_digest(record, completed, sha256)
        stored = StoredObject(record.key, record.length or 0, etag, content_type, sha256)
        await self._s3.stored(stored)
        if record.tail_key is not None:
            self._old_tails.append(record.tail_key)
        record.completed, record.sha256, record.etag = True, sha256, etag
        record.offset = record.length or 0
        record.parts, record.tail_key, record.tail_size = [], None, 0
        record.s3_upload_id = None
        record.content_type = content_type
        await self._s3.save(record)
        await self._drop_old_tails()
        return stored


def _sha256_of(data: memoryview) -> str:
    digest = Sha256()
    digest.update(data)
    return digest.hexdigest()


def _written_at(item: Mapping[str, Any]) -> float:
    """When the listed object was last written (UNIX seconds); a listing without
    the date reads as long ago, so the object is read rather than skipped."""
    modified = item.get("LastModified")
    return modified.timestamp() if isinstance(modified, datetime) else 0.0
