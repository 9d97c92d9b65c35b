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

import dataclasses
import hashlib
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from ..errors import NotFound, VidproxyError
from ..keys import RESERVED_PREFIX
from ..units import KiB
from .base import ObjectInfo
from .multipart import ErrorMapper

log = logging.getLogger(__name__)

RECORD_PREFIX = RESERVED_PREFIX + "sha256/"
RECORD_CONTENT_TYPE = "application/json"
# A record is ~1.2 KiB at most (a 1024-byte key, escaped); a larger body is not one.
MAX_RECORD_BYTES = 8 * KiB
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


def record_key(key: str) -> str:
    """Where the record of ``key`` lives in the bucket."""
    return RECORD_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()


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
    if info.sha256 or record is None or not record.describes(info):
        return info
    return dataclasses.replace(info, sha256=record.sha256)


class DigestRecords:
    """The records of one bucket, through the store's S3 client; ``errors`` maps
    botocore's exceptions to vidproxy's (``s3.s3_errors``)."""

    def __init__(self, client: Any, bucket: str, errors: ErrorMapper) -> None:
        self._client = client
        self._bucket = bucket
        self._errors = errors

    async def write(self, record: DigestRecord) -> None:
        """Store ``record``, replacing the key's earlier one. Raises vidproxy errors."""
        async with self._errors("PutObject (SHA-256 record)"):
            await self._client.put_object(
                Bucket=self._bucket,
                Key=record_key(record.key),
                Body=record.to_bytes(),
                ContentType=RECORD_CONTENT_TYPE,
            )

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
        async with self._errors("DeleteObject (SHA-256 record)"):
            await self._client.delete_object(Bucket=self._bucket, Key=record_key(key))
