"""The state of one resumable upload, as stored beside its bytes (JSON).

The record is the truth about an upload: ``offset`` counts only bytes that are
durably stored (S3 parts plus the tail object; fsynced bytes on fs), and the
SHA-256 state covers exactly those bytes. Anything a backend holds beyond it (a
part uploaded after the last save, bytes appended on fs) is rewritten or cut off
by the next PATCH, which starts from ``offset`` again.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidUploadHeader, OffsetMismatch, TooLarge, UploadGone

RECORD_FORMAT = 1


@dataclass(frozen=True)
class Part:
    number: int
    etag: str
    size: int


@dataclass
class UploadRecord:
    id: str
    key: str
    length: int | None  # None while the length is deferred
    metadata: dict[str, str | None]
    content_type: str | None  # from the metadata; else decided at the first bytes
    create_only: bool
    expires: float  # UNIX seconds; pushed back by every PATCH
    # The total the part plan was made for (None: deferred, parts grow).
    plan_size: int | None = None
    offset: int = 0
    completed: bool = False
    s3_upload_id: str | None = None
    parts: list[Part] = field(default_factory=list)
    tail_key: str | None = None  # S3: the object holding bytes not yet in a part
    tail_size: int = 0
    sha256_state: str | None = None  # hex hash state at ``offset``; None: start or lost
    sha256_lost: bool = False  # the state could not be kept: re-read at the end
    sha256: str | None = None  # the digest, once completed
    etag: str | None = None  # the object's, once completed
    revision: int = 0  # bumped at every save
    format: int = RECORD_FORMAT
    # Not stored: the backend's tag of the record as this request read or wrote it,
    # which the next write is conditional on (If-Match on S3).
    stored_etag: str | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        del data["stored_etag"]
        data["parts"] = [[p.number, p.etag, p.size] for p in self.parts]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UploadRecord:
        if data.get("format") != RECORD_FORMAT:
            raise ValueError(f"unknown upload record format {data.get('format')!r}")
        names = {f.name for f in dataclasses.fields(cls)} - {"stored_etag"}
        values = {name: data[name] for name in names if name in data}
        values["parts"] = [Part(int(n), str(e), int(s)) for n, e, s in data.get("parts", [])]
        return cls(**values)

    @property
    def parts_size(self) -> int:
        return sum(p.size for p in self.parts)

    def is_expired(self, now: float | None = None) -> bool:
        return not self.completed and (time.time() if now is None else now) >= self.expires

    def is_full(self) -> bool:
        return self.length is not None and self.offset >= self.length


def check_patch(record: UploadRecord, offset: int, now: float | None = None) -> None:
    """What a PATCH must agree with before any byte is read."""
    if record.is_expired(now):
        raise UploadGone("this upload expired; create a new one")
    if offset != record.offset:
        raise OffsetMismatch(f"Upload-Offset is {offset}, the upload is at {record.offset}")
    if record.completed:
        raise OffsetMismatch("this upload is complete")


def declare_length(record: UploadRecord, length: int, limit: int) -> None:
    """A PATCH's ``Upload-Length`` for a deferred upload: once, never below the offset."""
    if record.length is not None:
        if length != record.length:
            raise InvalidUploadHeader("Upload-Length cannot change once it is known")
        return
    if length > limit:
        raise TooLarge(f"the upload is larger than the {limit}-byte limit")
    if length < record.offset:
        raise InvalidUploadHeader("Upload-Length is below the bytes already uploaded")
    record.length = length


def room_left(record: UploadRecord, limit: int) -> int:
    """How many more bytes this upload may receive."""
    if record.length is not None:
        return record.length - record.offset
    return limit - record.offset
