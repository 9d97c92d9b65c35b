"""tus 1.0.0 request headers: pure parsers that raise vidproxy's own errors.

Spec: tus.io/protocols/resumable-upload (core, creation, creation-defer-length,
checksum). Every number is a bounded run of ASCII digits before ``int()``.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from email.utils import formatdate

from ..errors import InvalidUploadHeader, TusVersionUnsupported, UnsupportedChecksum

TUS_VERSION = "1.0.0"
EXTENSIONS = (
    "creation",
    "creation-with-upload",
    "creation-defer-length",
    "termination",
    "expiration",
    "checksum",
)
# hashlib names; the tus checksum extension names them the same way.
CHECKSUM_ALGORITHMS = ("sha1", "sha256", "md5")
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
_UINT_RE = re.compile(r"[0-9]{1,19}")  # below 2**63
_METADATA_KEY_RE = re.compile(r"[!-+\--~]+")  # printable ASCII without space or comma
_BASE64_RE = re.compile(r"[A-Za-z0-9+/]*={0,2}")
MAX_METADATA_PAIRS = 64


@dataclass(frozen=True)
class Checksum:
    algorithm: str
    digest: bytes


def check_version(value: str | None) -> None:
    """``Tus-Resumable`` must name the one version spoken here (412 otherwise)."""
    if value is None or value.strip() != TUS_VERSION:
        raise TusVersionUnsupported(f"this server speaks tus {TUS_VERSION} (Tus-Resumable)")


def parse_uint(name: str, value: str) -> int:
    if not _UINT_RE.fullmatch(value.strip()):
        raise InvalidUploadHeader(f"{name} must be a non-negative integer")
    return int(value.strip())


def parse_defer_length(value: str | None) -> bool:
    if value is None:
        return False
    if value.strip() != "1":
        raise InvalidUploadHeader("Upload-Defer-Length must be 1")
    return True


def parse_metadata(value: str | None) -> dict[str, str | None]:
    """``Upload-Metadata``: comma-separated ``key base64value`` pairs (value optional).
    Values are decoded as UTF-8 with surrogateescape, so no byte is lost."""
    if value is None or not value.strip():
        return {}
    pairs: dict[str, str | None] = {}
    for item in value.split(","):
        name, _, encoded = item.strip().partition(" ")
        encoded = encoded.strip()
        if not _METADATA_KEY_RE.fullmatch(name) or name in pairs:
            raise InvalidUploadHeader("Upload-Metadata keys must be unique, non-empty ASCII")
        pairs[name] = _decode_base64(encoded) if encoded else None
        if len(pairs) > MAX_METADATA_PAIRS:
            raise InvalidUploadHeader(f"Upload-Metadata has more than {MAX_METADATA_PAIRS} pairs")
    return pairs


def _decode_base64(encoded: str) -> str:
    if not _BASE64_RE.fullmatch(encoded):
        raise InvalidUploadHeader("Upload-Metadata values must be base64")
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidUploadHeader("Upload-Metadata values must be base64") from None
    return raw.decode("utf-8", "surrogateescape")


def encode_metadata(pairs: dict[str, str | None]) -> str:
    """The header as a HEAD answer gives it back."""
    items = []
    for name, text in pairs.items():
        if text is None:
            items.append(name)
        else:
            raw = text.encode("utf-8", "surrogateescape")
            items.append(f"{name} {base64.b64encode(raw).decode('ascii')}")
    return ",".join(items)


def parse_checksum(value: str | None) -> Checksum | None:
    """``Upload-Checksum: ALGORITHM BASE64DIGEST``; an unknown algorithm is 400."""
    if value is None:
        return None
    algorithm, _, encoded = value.strip().partition(" ")
    algorithm = algorithm.lower()
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise UnsupportedChecksum(f"Upload-Checksum algorithms: {', '.join(CHECKSUM_ALGORITHMS)}")
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidUploadHeader("Upload-Checksum must be ALGORITHM BASE64DIGEST") from None
    if not digest:
        raise InvalidUploadHeader("Upload-Checksum must be ALGORITHM BASE64DIGEST")
    return Checksum(algorithm, digest)


def http_date(timestamp: float) -> str:
    """RFC 9110 §5.6.7 IMF-fixdate, as ``Upload-Expires`` carries it."""
    return formatdate(timestamp, usegmt=True)


def parse_flag(value: str | None) -> bool:
    """A metadata flag such as ``create_only``: present with no value, or a true word."""
    if value is None:
        return True
    return value.strip().lower() in ("1", "true", "yes", "on")
