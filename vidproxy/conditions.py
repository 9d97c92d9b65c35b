"""Which status and which bytes a GET or HEAD gets: RFC 9110 conditionals and Range.

One pure decision, used by every path that serves bytes (S3, the fs store,
the disk cache), so a client sees the same status, ``Content-Range`` and
validators whichever path answered:

- ``If-Match`` / ``If-Unmodified-Since`` that fail give 412 (§13.2.2 steps 1-2);
- ``If-None-Match`` / ``If-Modified-Since`` that match give 304 (steps 3-4);
- a syntactically invalid or multi-range ``Range`` is ignored: 200, full body
  (§14.2 lets a server ignore Range; we never build multipart/byteranges);
- ``bytes=-0`` and a first byte at or past the size give 416;
- an ``If-Range`` that does not match gives 200 with the full body (§13.1.5).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

from .errors import PreconditionFailed, RangeNotSatisfiable

# RFC 9110 §14.1.1: DIGIT is ASCII only; without re.ASCII, \d takes any Unicode digit.
_RANGE_RE = re.compile(r"bytes=(\d{0,20})-(\d{0,20})", re.IGNORECASE | re.ASCII)


@dataclass(frozen=True)
class RangeSpec:
    """A single byte range as the client wrote it, before the size is known.

    ``start is None`` means a suffix range of the last ``end`` bytes.
    """

    start: int | None
    end: int | None

    def header(self) -> str:
        if self.start is None:
            return f"bytes=-{self.end}"
        return f"bytes={self.start}-{'' if self.end is None else self.end}"

    def resolve(self, size: int) -> ByteRange:
        """The bytes this spec selects from an object of ``size`` bytes."""
        if self.start is None:
            assert self.end is not None
            if self.end == 0 or size == 0:
                raise RangeNotSatisfiable(size)
            return ByteRange(max(0, size - self.end), size)
        if self.start >= size:
            raise RangeNotSatisfiable(size)
        stop = size if self.end is None else min(self.end + 1, size)
        return ByteRange(self.start, stop)


@dataclass(frozen=True)
class ByteRange:
    start: int
    stop: int  # exclusive

    @property
    def length(self) -> int:
        return self.stop - self.start

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.stop - 1}/{size}"

    def spec(self) -> RangeSpec:
        return RangeSpec(self.start, self.stop - 1)


@dataclass(frozen=True)
class Validators:
    """What identifies one version of an object."""

    size: int
    etag: str  # quoted, as in the ETag header
    last_modified: datetime


@dataclass(frozen=True)
class Plan:
    status: int  # 200, 206 or 304
    range: ByteRange | None  # set for 206


def parse_range(header: str | None) -> RangeSpec | None:
    """Parse a single ``bytes=`` range; ``None`` for absent, invalid or multi-range."""
    if not header:
        return None
    match = _RANGE_RE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.group(1), match.group(2)
    if not first and not last:
        return None
    if not first:
        return RangeSpec(None, int(last))
    start, end = int(first), int(last) if last else None
    if end is not None and end < start:
        return None
    return RangeSpec(start, end)


def plan_response(method: str, headers: Mapping[str, str], v: Validators) -> Plan:
    """Decide the answer to a GET/HEAD for the object version ``v``.

    Raises ``PreconditionFailed`` (412) or ``RangeNotSatisfiable`` (416).
    """
    _check_preconditions(headers, v)
    if _not_modified(headers, v):
        return Plan(304, None)
    spec = parse_range(headers.get("Range"))
    if spec is None or method not in ("GET", "HEAD") or not _if_range_holds(headers, v):
        return Plan(200, None)
    return Plan(206, spec.resolve(v.size))


def _check_preconditions(headers: Mapping[str, str], v: Validators) -> None:
    if_match = headers.get("If-Match")
    if if_match is not None:
        if not _etag_listed(if_match, v.etag, weak=False):
            raise PreconditionFailed("If-Match does not match the current ETag")
        return
    since = _parse_date(headers.get("If-Unmodified-Since"))
    if since is not None and _seconds(v.last_modified) > _seconds(since):
        raise PreconditionFailed("the object was modified after If-Unmodified-Since")


def _not_modified(headers: Mapping[str, str], v: Validators) -> bool:
    if_none_match = headers.get("If-None-Match")
    if if_none_match is not None:
        return _etag_listed(if_none_match, v.etag, weak=True)
    since = _parse_date(headers.get("If-Modified-Since"))
    return since is not None and _seconds(v.last_modified) <= _seconds(since)


def _if_range_holds(headers: Mapping[str, str], v: Validators) -> bool:
    value = headers.get("If-Range")
    if value is None:
        return True
    value = value.strip()
    if value.startswith(('"', "W/")):
        # §13.1.5: If-Range uses the strong comparison; a weak tag never matches.
        return not value.startswith("W/") and value == v.etag
    date = _parse_date(value)
    return date is not None and _seconds(date) == _seconds(v.last_modified)


def _etag_listed(header: str, etag: str, *, weak: bool) -> bool:
    header = header.strip()
    if header == "*":
        return True
    if not weak and etag.startswith("W/"):
        return False
    bare = etag.removeprefix("W/")
    for item in header.split(","):
        tag = item.strip()
        if tag.startswith("W/"):
            if not weak:
                continue
            tag = tag[2:]
        if tag == bare:
            return True
    return False


def _parse_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return parsed if parsed.tzinfo is not None else None


def _seconds(moment: datetime) -> int:
    # HTTP dates have one-second resolution.
    return int(moment.timestamp())
