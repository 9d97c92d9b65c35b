"""tus uploads on S3: the record, the tail and the multipart upload, all in the bucket.

Per upload, under ``.vidproxy/uploads/``::

    <id>.info         the record (JSON), written with If-Match on its last ETag
    <id>.tail.<rev>   bytes not yet in a part (shorter than one), as tusd's ``.part``

and one multipart upload on the video's own key, created when the first full
part is ready (so the content type can be sniffed from the first bytes, and an
upload smaller than a part ends as one PutObject of its tail). Parts are sent in
order, numbered from 1 without gaps (rclone needs both); each part sent is saved
in the record, so the offset a client sees is always durable. A part uploaded
after the last save (a crash) is uploaded again, with the same bytes, by the
PATCH that resumes at the saved offset.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ..errors import (
    NotFound,
    ObjectDamaged,
    PreconditionFailed,
    UploadLocked,
    UpstreamError,
    UpstreamUnavailable,
)
from ..keys import RESERVED_PREFIX
from ..media import SNIFF_BYTES, choose_content_type
from ..uploads.record import Part, UploadRecord
from ..uploads.sha256state import Sha256
from .base import AppendSource, StoredObject
from .multipart import PartBody, PartBuffers
from .parts import PartPlan
from .s3 import SHA256_METADATA, S3Store, s3_errors

log = logging.getLogger(__name__)

RECORDS_PREFIX = RESERVED_PREFIX + "uploads/"
RECORD_SUFFIX = ".info"

# Called with every object a finished upload made: the cache drops its entry, the
# digest record is written.
OnStored = Callable[[StoredObject], Awaitable[None]]


def record_key(upload_id: str) -> str:
    return f"{RECORDS_PREFIX}{upload_id}{RECORD_SUFFIX}"


def tail_key(upload_id: str, revision: int) -> str:
    return f"{RECORDS_PREFIX}{upload_id}.tail.{revision}"


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
        # The ETag each record had when this process last read or wrote it: the
        # next write is conditional on it (If-Match), so a replica that wrote in
        # between makes ours fail instead of being overwritten.
        self._etags: dict[str, str] = {}

    # ---- records ------------------------------------------------------------

    async def create(self, record: UploadRecord) -> None:
        await self._put_record(record, {"IfNoneMatch": "*"})

    async def load(self, upload_id: str) -> UploadRecord:
        async with s3_errors("GetObject"):
            response = await self._client.get_object(Bucket=self._bucket, Key=record_key(upload_id))
            async with response["Body"] as body:
                raw = await body.read()
        try:
            record = UploadRecord.from_json(json.loads(raw))
        except (ValueError, KeyError, TypeError) as exc:
            log.error("upload record %s is unreadable: %s", upload_id, exc)
            raise ObjectDamaged("the record of this upload is damaged") from None
        self._etags[upload_id] = str(response.get("ETag", ""))
        return record

    async def save(self, record: UploadRecord) -> None:
        etag = self._etags.get(record.id)
        await self._put_record(record, {"IfMatch": etag} if etag else {})

    async def _put_record(self, record: UploadRecord, conditions: dict[str, str]) -> None:
        record.revision += 1
        if not record.completed:
            record.expires = time.time() + self._expire_after
        body = json.dumps(record.to_json()).encode()
        try:
            async with s3_errors("PutObject"):
                response = await self._client.put_object(
                    Bucket=self._bucket,
                    Key=record_key(record.id),
                    Body=body,
                    ContentType="application/json",
                    **conditions,
                )
        except PreconditionFailed:
            # Another replica wrote the record since we read it: it owns the upload now.
            self._etags.pop(record.id, None)
            raise UploadLocked("another request wrote this upload meanwhile; ask HEAD") from None
        self._etags[record.id] = str(response.get("ETag", ""))

    async def records(self) -> AsyncIterator[UploadRecord]:
        async for key in self._list(RECORDS_PREFIX):
            if not key.endswith(RECORD_SUFFIX):
                continue
            upload_id = key[len(RECORDS_PREFIX) : -len(RECORD_SUFFIX)]
            try:
                yield await self.load(upload_id)
            except (NotFound, ObjectDamaged):
                continue

    async def _list(self, prefix: str) -> AsyncIterator[str]:
        params: dict[str, Any] = {"Bucket": self._bucket, "Prefix": prefix}
        while True:
            async with s3_errors("ListObjectsV2"):
                page = await self._client.list_objects_v2(**params)
            for item in page.get("Contents", []):
                yield str(item["Key"])
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return
            params["ContinuationToken"] = token

    async def terminate(self, record: UploadRecord) -> None:
        if record.s3_upload_id is not None:
            try:
                async with s3_errors("AbortMultipartUpload"):
                    await self._client.abort_multipart_upload(
                        Bucket=self._bucket, Key=record.key, UploadId=record.s3_upload_id
                    )
            except (NotFound, UpstreamError):
                pass  # already gone (moto answers 500 to some of these)
        # Every object of the upload, stale tails a crash left behind included.
        async for key in self._list(f"{RECORDS_PREFIX}{record.id}."):
            if key != record_key(record.id):
                await self._delete(key)
        await self._delete(record_key(record.id))
        self._etags.pop(record.id, None)

    async def _delete(self, key: str) -> None:
        async with s3_errors("DeleteObject"):
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
        async with s3_errors("GetObject"):
            response = await self._client.get_object(Bucket=self._bucket, Key=record.tail_key)
            async with response["Body"] as body:
                data = await body.read()
        if len(data) != record.tail_size:
            raise ObjectDamaged(
                f"the tail of this upload holds {len(data)} bytes, not {record.tail_size}"
            )
        into[: len(data)] = data
        return len(data)

    async def put_tail(self, record: UploadRecord, data: memoryview) -> str:
        key = tail_key(record.id, record.revision + 1)
        async with s3_errors("PutObject"):
            await self._client.put_object(Bucket=self._bucket, Key=key, Body=bytes(data))
        return key

    async def drop_object(self, key: str | None) -> None:
        if key is None:
            return
        try:
            await self._delete(key)
        except (UpstreamError, UpstreamUnavailable) as exc:
            log.warning("could not remove %s: %s", key, exc.message)

    async def create_multipart(self, record: UploadRecord, content_type: str) -> str:
        async with s3_errors("CreateMultipartUpload"):
            response = await self._client.create_multipart_upload(
                Bucket=self._bucket, Key=record.key, ContentType=content_type
            )
        return str(response["UploadId"])

    async def upload_part(self, record: UploadRecord, number: int, data: memoryview) -> Part:
        async with s3_errors("UploadPart"):
            response = await self._client.upload_part(
                Bucket=self._bucket,
                Key=record.key,
                UploadId=record.s3_upload_id,
                PartNumber=number,
                Body=PartBody(data),
            )
        self._store.count_part()
        return Part(number, str(response["ETag"]), len(data))

    async def complete(self, record: UploadRecord) -> str:
        conditions = {"IfNoneMatch": "*"} if record.create_only else {}
        parts = [{"PartNumber": p.number, "ETag": p.etag} for p in record.parts]
        async with s3_errors("CompleteMultipartUpload"):
            response = await self._client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=record.key,
                UploadId=record.s3_upload_id,
                MultipartUpload={"Parts": parts},
                **conditions,
            )
        size = record.parts_size
        return await self._store.etag_as_read(record.key, str(response["ETag"]), size)

    async def put_whole(
        self, record: UploadRecord, data: memoryview, content_type: str, sha256: str
    ) -> str:
        conditions = {"IfNoneMatch": "*"} if record.create_only else {}
        async with s3_errors("PutObject"):
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
        # Parts in flight, in order, each with the hash state at its end.
        self._inflight: deque[tuple[asyncio.Task[Part], str | None]] = deque()
        self._old_tails: list[str] = []

    async def run(self) -> StoredObject | None:
        assert self._source is not None
        record = self._record
        number = len(record.parts) + 1
        buffer: memoryview | None = await self._buffers.take(self._plan.size_of(number))
        try:
            filled = await self._s3.read_tail(record, buffer)
            tail_bytes, hashed = filled, filled
            while True:
                filled += await self._source.readinto(buffer[filled:])
                if filled < len(buffer):
                    break
                await self._feed_hash(buffer[hashed:filled])
                part, buffer = buffer, None  # the part's task gives it back once sent
                await self._send_part(number, part)
                number += 1
                buffer = await self._buffers.take(self._plan.size_of(number))
                filled = hashed = tail_bytes = 0
            await self._feed_hash(buffer[hashed:filled])
            await self._land_all()
            return await self._settle(number, buffer[:filled], filled > tail_bytes)
        except BaseException:
            await self._cancel_inflight()
            raise
        finally:
            if buffer is not None:
                self._buffers.give_back(buffer)

    async def _feed_hash(self, data: memoryview) -> None:
        if self._hash is not None and len(data):
            await asyncio.to_thread(self._hash.update, data)

    def _hash_state(self) -> str | None:
        return self._hash.state() if self._hash is not None else None

    async def _send_part(self, number: int, buffer: memoryview) -> None:
        record = self._record
        if record.s3_upload_id is None:
            # The first full part starts at byte 0: sniff from it, then start S3's upload.
            content_type = content_type_for(record, buffer)
            record.content_type = content_type
            record.s3_upload_id = await self._s3.create_multipart(record, content_type)
            await self._s3.save(record)  # so an abort can always find it
        while len(self._inflight) >= self._s3.concurrency:
            await self._land_oldest()
        task = asyncio.ensure_future(self._upload(number, buffer))
        self._inflight.append((task, self._hash_state()))

    async def _upload(self, number: int, buffer: memoryview) -> Part:
        try:
            return await self._s3.upload_part(self._record, number, buffer)
        finally:
            self._buffers.give_back(buffer)

    async def _land_oldest(self) -> None:
        task, state = self._inflight[0]
        part = await task
        self._inflight.popleft()
        record = self._record
        record.parts.append(part)
        if record.tail_key is not None:
            self._old_tails.append(record.tail_key)
        record.tail_key, record.tail_size = None, 0
        record.offset = record.parts_size
        record.sha256_state = state
        if not self._verified_at_end:
            await self._s3.save(record)  # the offset now promises this part

    async def _land_all(self) -> None:
        while self._inflight:
            await self._land_oldest()

    async def _cancel_inflight(self) -> None:
        for task, _ in self._inflight:
            task.cancel()
        await asyncio.gather(*(task for task, _ in self._inflight), return_exceptions=True)
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
            etag = await self._s3.complete(record)
            sha256 = (
                self._hash.hexdigest()
                if self._hash is not None
                else await self._s3.sha256_of_object(record.key)
            )
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
