"""Object keys: validation, generation and the on-disk names derived from them."""

from __future__ import annotations

import hashlib

from ulid import ULID

from .errors import InvalidKey

MAX_KEY_BYTES = 1024
# vidproxy's own records (upload state, digests, markers) live in the bucket
# under this prefix: listing never shows it and no user key can name it.
RESERVED_PREFIX = ".vidproxy/"
# The prefix's own name is reserved too: on stores that keep keys as files
# (rclone), an object named ".vidproxy" and the directory of records collide.
RESERVED_NAME = RESERVED_PREFIX.rstrip("/")
_FORBIDDEN_SEGMENTS = {"", ".", ".."}


def validate_key(key: str) -> str:
    """Return ``key`` if it is a valid object key, else raise ``InvalidKey``."""
    encoded = key.encode("utf-8", "surrogatepass")
    if not 1 <= len(encoded) <= MAX_KEY_BYTES:
        raise InvalidKey(f"a key is 1 to {MAX_KEY_BYTES} bytes of UTF-8")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in key):
        raise InvalidKey("a key must be valid UTF-8")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        raise InvalidKey("a key must not contain control characters")
    if "\\" in key:
        raise InvalidKey("a key must not contain a backslash")
    if any(segment in _FORBIDDEN_SEGMENTS for segment in key.split("/")):
        raise InvalidKey("a key must not start with '/' or have empty, '.' or '..' segments")
    if is_reserved(key):
        raise InvalidKey(
            f"{RESERVED_NAME!r} and keys under {RESERVED_PREFIX!r} are vidproxy's own records"
        )
    return key


def is_reserved(key: str) -> bool:
    """True for keys under vidproxy's own prefix in the bucket, and for its name."""
    return key.startswith(RESERVED_PREFIX) or key == RESERVED_NAME


def new_key() -> str:
    """A fresh, time-sortable key for uploads that do not name one."""
    return str(ULID())


def key_digest(key: str) -> str:
    """The name a key gets on local disk: never the key text, so no key can
    walk out of its directory or collide with a sibling such as ``NAME.gz``."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()
