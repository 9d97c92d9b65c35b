"""SHA-256 records: the digest of an S3 object whose metadata cannot carry it.

S3 fixes an object's user metadata at ``CreateMultipartUpload``, before the
body has been read, so a multipart upload cannot store the SHA-256 vidproxy
computes while it streams. Object tagging is missing on R2 and rclone, and a
copy onto itself changes the ETag and stops at 5 GB. So the digest goes into
a small record object of its own, in the same bucket::

    .vidproxy/sha256/<sha256(key)>   {"key", "etag", "size", "sha256"}

Hashing the key keeps every record key short and legal whatever the key. A
record names the ETag (as HEAD and GET show it) and the size of the version it
describes, and is believed only while the object still has both: an object
overwritten by something else, or a crash between CompleteMultipartUpload and
the record's write, leaves a record that no longer matches, never a wrong
digest. Records live in the bucket, so they survive restarts and every
replica sees them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass

from ..errors import NotFound, VidproxyError
from ..keys import RESERVED_PREFIX
from ..units import KiB
from .base import ObjectInfo
from .multipart import ErrorMapper, Spawner
from .s3api import S3API

log = logging.getLogger(__name__)

RECORD_PREFIX = RESERVED_PREFIX + "sha256/"
RECORD_CONTENT_TYPE = "application/json"
# A record is ~1.2 KiB at most (a 1024-byte key, escaped); a larger body is not one.
MAX_RECORD_BYTES = 8 * KiB
# Digests remembered per process (~300 bytes each with a long key: ~3 MiB).
KNOWN_DIGESTS = 10_000
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
# What KnownDigests holds for a version without a record (never a parsed record's value).
NO_RECORD = ""


def record_key(key: str) -> str:
    """Where the record of ``key`` lives in the bucket."""
    return RECORD_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()


def is_record_path(url_path: str, bucket: str) -> bool:
    """True for the URL path of a request for a record in ``bucket``: path-style
    ``/bucket/KEY`` or virtual-host ``/KEY`` (no bucket name starts with ".";
    the prefix has no character that a path would percent-encode)."""
    return url_path.startswith((f"/{bucket}/{RECORD_PREFIX}", f"/{RECORD_PREFIX}"))


@dataclass(frozen=True)
class DigestRecord:
    key: str
    etag: str  # quoted, as HEAD and GET show it
    size: int
    sha256: str  # lower-case hex

    def to_bytes(self) -> bytes:
        return json.dumps(dataclasses.asdict(self)).encode()

    @classmethod
    def parse(cls, data: bytes) -> DigestRecord | None:
        """The record in ``data``, or None if it is not one."""
        try:
            fields = json.loads(data)
        except ValueError:
            return None
        if not isinstance(fields, dict):
            return None
        key, etag, size, sha256 = (fields.get(name) for name in ("key", "etag", "size", "sha256"))
        if not (isinstance(key, str) and isinstance(etag, str) and isinstance(sha256, str)):
            return None
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            return None
        if not _SHA256_RE.fullmatch(sha256):
            return None
        return cls(key, etag, size, sha256)

    def describes(self, info: ObjectInfo) -> bool:
        """True if this record was written for the version ``info`` describes."""
        return (self.key, self.etag, self.size) == (info.key, info.etag, info.size)


def with_recorded_sha256(info: ObjectInfo, record: DigestRecord | None) -> ObjectInfo:
    """``info`` with the record's SHA-256, if the record describes this version.
    A digest the object carries itself (its metadata) always wins."""
    if info.sha256 or record is None or not record.describes(info) or not record.sha256:
        return info
    return dataclasses.replace(info, sha256=record.sha256)


class DigestRecords:
    """The records of one bucket, through the store's S3 client; ``errors`` maps
    botocore's exceptions to vidproxy's (``s3.s3_errors``), ``spawn`` runs a
    read beside the request that wants it (the store waits for it at close)."""

    def __init__(self, client: S3API, bucket: str, errors: ErrorMapper, spawn: Spawner) -> None:
        self._client = client
        self._bucket = bucket
        self._errors = errors
        self._spawn = spawn
        self.known = KnownDigests()

    def look_up(self, key: str) -> DigestLookup:
        """Start finding the digest of ``key``'s current version: the record's GET
        starts now, beside the object's, unless this process knows the digest or
        knows that the version it saw last has no record."""
        known = self.known.get(key)
        reading = None if known is not None else self.read_later(key)
        return DigestLookup(self, key, known, reading)

    def read_later(self, key: str) -> asyncio.Task[DigestRecord | None]:
        """``read``, beside whatever the caller does meanwhile."""
        return self._spawn(self.read(key))

    async def write(self, record: DigestRecord) -> None:
        """Store ``record``, replacing the key's earlier one. Raises vidproxy errors."""
        async with self._errors("PutObject (SHA-256 record)"):
            await self._client.put_object(
                Bucket=self._bucket,
                Key=record_key(record.key),
                Body=record.to_bytes(),
                ContentType=RECORD_CONTENT_TYPE,
            )
        self.known.add(record)

    async def read(self, key: str) -> DigestRecord | None:
        """The record stored for ``key``; None if there is none, or it cannot be
        read: a missing digest costs the answer a header, never the answer."""
        try:
            data = await self._fetch(record_key(key))
        except NotFound:
            return None
        except VidproxyError as exc:
            log.warning("cannot read the SHA-256 record of %r: %s", key, exc.message)
            return None
        record = None if data is None else DigestRecord.parse(data)
        if record is None or record.key != key:
            # Not one of ours, or (however unlikely) another key's with the same hash.
            log.warning("ignoring a malformed SHA-256 record for %r", key)
            return None
        return record

    async def _fetch(self, name: str) -> bytes | None:
        """The body of ``name``; None if it is too large to be a record."""
        async with self._errors("GetObject (SHA-256 record)"):
            response = await self._client.get_object(Bucket=self._bucket, Key=name)
            async with response["Body"] as body:
                if int(response.get("ContentLength") or 0) > MAX_RECORD_BYTES:
                    return None
                return bytes(await body.read())

    async def delete(self, key: str) -> None:
        """Remove the key's record; a missing one is not an error."""
        self.known.forget(key)
        async with self._errors("DeleteObject (SHA-256 record)"):
            await self._client.delete_object(Bucket=self._bucket, Key=record_key(key))


class DigestLookup:
    """The digest of one read, found beside the object's HEAD or GET."""

    def __init__(
        self,
        records: DigestRecords,
        key: str,
        known: DigestRecord | None,
        reading: asyncio.Task[DigestRecord | None] | None,
    ) -> None:
        self._records = records
        self._key = key
        self._known = known
        self._reading = reading

    async def attach(self, info: ObjectInfo) -> ObjectInfo:
        """``info`` with its digest: its own (metadata) without waiting for the
        record, else what this process knows of that version, else the record's
        where the object says one was written."""
        known = self._records.known
        if info.sha256:
            known.add(DigestRecord(info.key, info.etag, info.size, info.sha256))
            return info
        if self._known is not None and self._known.describes(info):
            return with_recorded_sha256(info, self._known)
        if not info.sha256_recorded:
            # Written by something else: no record to wait for. A record GET
            # already sent goes on alone; the next read of this version sends none.
            known.add(DigestRecord(info.key, info.etag, info.size, NO_RECORD))
            return info
        if self._reading is None:
            # What this process knew is of another version: the object changed
            # behind its back. Rare, so the record is read only now.
            self._reading = self._records.read_later(self._key)
        # Shielded: a request cancelled here must not cut the record's GET mid-answer
        # (its pooled connection would be lost); the store waits for it at close.
        record = await asyncio.shield(self._reading)
        if record is not None and record.describes(info):
            known.add(record)
        return with_recorded_sha256(info, record)


class KnownDigests:
    """The digests this process has seen lately, by key (``NO_RECORD`` for a
    version that has none): a read of a version whose digest is known needs
    no record GET. Safe to keep however long,
    since each names the ETag and size it was seen with: a version changed by
    anyone else no longer matches, and is looked up again."""

    def __init__(self, capacity: int = KNOWN_DIGESTS) -> None:
        self._capacity = capacity
        self._known: OrderedDict[str, DigestRecord] = OrderedDict()

    def get(self, key: str) -> DigestRecord | None:
        found = self._known.get(key)
        if found is not None:
            self._known.move_to_end(key)
        return found

    def add(self, record: DigestRecord) -> None:
        self._known[record.key] = record
        self._known.move_to_end(record.key)
        while len(self._known) > self._capacity:
            self._known.popitem(last=False)

    def forget(self, key: str) -> None:
        self._known.pop(key, None)
