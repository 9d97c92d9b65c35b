"""The small interfaces between the HTTP handlers and a storage backend.

Handlers know ``Store``, ``ObjectReader`` and ``UploadSource``, never S3.
Backends raise only ``vidproxy.errors`` exceptions.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from ..conditions import ByteRange, RangeSpec, Validators
from ..errors import ObjectDamaged
from ..uploads.record import UploadRecord

# What a reader's stream yields: a cache following a fill hands out views of
# the bytes it holds (never of a buffer that is reused) rather than copies.
Chunk = bytes | memoryview


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str  # quoted, exactly as sent in the ETag header
    last_modified: datetime  # timezone-aware
    content_type: str
    sha256: str | None  # hex; None where the backend could not record it
    # Hex MD5 of the body where the backend vouches for one (an S3 ETag of a
    # single-part object not encrypted with KMS or a customer key), else None.
    md5: str | None = None
    # The object says a SHA-256 record of it was written (storage/digests.py):
    # only then is one worth waiting for.
    sha256_recorded: bool = False

    @property
    def validators(self) -> Validators:
        return Validators(self.size, self.etag, self.last_modified)

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "size": self.size,
            "etag": self.etag,
            "last_modified": self.last_modified.isoformat().replace("+00:00", "Z"),
            "content_type": self.content_type,
        }

    def to_record(self) -> dict[str, Any]:
        """Everything, for metadata files on local disk (fs store, cache)."""
        return {**self.to_json(), "sha256": self.sha256, "md5": self.md5}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ObjectInfo:
        return cls(
            key=str(record["key"]),
            size=int(record["size"]),
            etag=str(record["etag"]),
            last_modified=datetime.fromisoformat(record["last_modified"]),
            content_type=str(record["content_type"]),
            sha256=record.get("sha256"),
            md5=record.get("md5"),
        )


@dataclass(frozen=True)
class StoredObject:
    """What an upload produced, as the upload answer reports it."""

    key: str
    size: int
    etag: str
    content_type: str
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "size": self.size,
            "etag": self.etag,
            "content_type": self.content_type,
            "sha256": self.sha256,
        }


@dataclass(frozen=True)
class ObjectPage:
    items: list[ObjectInfo]
    next_after: str | None


@dataclass
class StoreStats:
    """Plain counters a backend keeps about its upstream; metrics read them."""

    requests: Counter[str] = field(default_factory=Counter)  # by operation
    errors: Counter[str] = field(default_factory=Counter)  # by operation
    parts_sent: int = 0
    # Whether the backend itself refuses a second create-only write of a key
    # (S3's If-None-Match: * on PutObject and CompleteMultipartUpload); None
    # until probed, and on backends with no such thing to probe.
    create_only_enforced: bool | None = None


class ObjectReader(Protocol):
    """One version of one object, opened for reading.

    ``open`` may already have started fetching the range it was hinted;
    ``stream`` serves any range of the same version (its ETag), and
    ``aclose`` releases whatever ``open`` acquired.
    """

    @property
    def info(self) -> ObjectInfo: ...

    @property
    def local_path(self) -> Path | None:
        """A local file holding exactly this version, for sendfile; else None."""
        ...

    # "HIT" or "MISS" where a cache answered, else None: settable, because the
    # cache labels a backend's reader that it hands on.
    cache_status: str | None

    async def stream(self, byte_range: ByteRange | None) -> AsyncIterator[Chunk]:
        """The bytes of ``byte_range`` (all of them for None). Async because a
        backend may have to fetch the range first; the iterator then yields as
        the bytes arrive."""
        ...

    async def aclose(self) -> None: ...

    def damaged(self, found: str) -> ObjectDamaged:
        """``local_path`` turned out not to hold ``info`` (``found`` says how):
        log it, stop offering that file, and return the error to answer with."""
        ...


async def close_stream(chunks: AsyncIterator[Chunk]) -> None:
    """Close what ``ObjectReader.stream`` returned, read to the end or not: an S3
    body left open keeps its pooled connection."""
    close = getattr(chunks, "aclose", None)
    if close is not None:
        await close()


class UploadSource(Protocol):
    """A request body, read in pieces of the store's choosing."""

    content_length: int | None  # None for chunked bodies
    expected_sha256: str | None  # the client's X-Content-SHA256, if any

    async def readinto(self, buffer: memoryview) -> int:
        """Fill the caller's buffer; fewer bytes only at the end, 0 once the body
        is complete. Raises if the body is cut short, too large or fails its
        checksum, so a store that reads to 0 has a verified body. The source may
        go on reading ``buffer`` (to hash it) until the next call, which waits for
        that: so the caller may pass the same buffer again."""
        ...

    def sha256(self) -> str:
        """Hex SHA-256 of the whole body; valid once ``readinto`` returned 0."""
        ...


class Store(Protocol):
    # Read-only here: backends keep plain attributes, the cache passes its
    # backend's through properties.
    @property
    def name(self) -> str: ...

    @property
    def stats(self) -> StoreStats: ...

    async def open(self, key: str, hint: RangeSpec | None, *, head: bool = False) -> ObjectReader:
        """Open ``key`` for reading; ``hint`` is the range most likely wanted.

        With ``head=True`` only metadata is needed. Raises ``NotFound``."""
        ...

    async def put(
        self, key: str, source: UploadSource, content_type: str, *, create_only: bool = False
    ) -> StoredObject:
        """Store the body under ``key``. With ``create_only``, raise
        ``PreconditionFailed`` instead of replacing an existing object."""
        ...

    async def delete(self, key: str) -> None:
        """Remove ``key``; removing a missing key is not an error."""
        ...

    async def list(self, prefix: str, after: str, limit: int) -> ObjectPage: ...

    async def check_ready(self) -> None:
        """Raise ``UpstreamUnavailable`` unless the backend answers."""
        ...


class AppendSource(Protocol):
    """One tus PATCH body, appended at the upload's offset."""

    # True when the body carries a checksum: its bytes count only once the whole
    # body is read and matched, so nothing may become the upload's before that.
    verified_at_end: bool

    async def readinto(self, buffer: memoryview) -> int:
        """Fill ``buffer``; fewer bytes at the end of the body, or where it was
        cut off (then the bytes that did arrive are still the upload's, and the
        caller raises the cut afterwards). Raises on a checksum mismatch."""
        ...


class ResumableStore(Protocol):
    """Where tus uploads keep their records and bytes: in the backend itself, so
    any replica and any restart continues an upload. Every method raises
    ``NotFound`` for an upload it does not hold."""

    async def create(self, record: UploadRecord) -> None:
        """Store a new record (its id is fresh)."""
        ...

    async def load(self, upload_id: str) -> UploadRecord: ...

    async def append(self, record: UploadRecord, source: AppendSource) -> StoredObject | None:
        """Store the body at ``record.offset``, keep ``record`` up to date with what
        is durable (saved as it goes), and finish the upload once its last byte is
        stored (the object appears under ``record.key``): returns it then."""
        ...

    async def finish_empty(self, record: UploadRecord) -> StoredObject:
        """Finish an upload whose bytes are all stored but not yet an object
        (a zero-length upload, a deferred length declared at the offset)."""
        ...

    async def save(self, record: UploadRecord) -> None:
        """Write ``record`` back (a changed expiry or a declared length)."""
        ...

    async def terminate(self, record: UploadRecord) -> None:
        """Drop the upload: its bytes, parts and record."""
        ...

    def records(self, idle_for: float = 0.0) -> AsyncIterator[UploadRecord]:
        """Every upload record last written at least ``idle_for`` seconds ago.
        Each write sets an expiry at most ``expire_after`` later, so the expiry
        sweep reads only the records idle that long, not every live one."""
        ...
