"""keys.py: what a key may be, fresh keys, and the on-disk names derived from keys."""

from __future__ import annotations

import re

import pytest

from vidproxy.errors import InvalidKey
from vidproxy.keys import MAX_KEY_BYTES, key_digest, new_key, validate_key

ULID_RE = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")


@pytest.mark.parametrize(
    "key",
    [
        "a",
        "movie.mp4",
        "user/42/2024/clip.webm",
        "vidéo/été ü.mkv",
        "with space and %25 and ?#&",
        ".hidden/..dots.../a..b",
        "x" * MAX_KEY_BYTES,
        "é" * (MAX_KEY_BYTES // 2),  # 2 bytes each: exactly the limit
        "trailing.dot.",
    ],
)
def test_valid_keys_are_returned_unchanged(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/leading",
        "trailing/",
        "a//b",
        ".",
        "..",
        "./a",
        "a/./b",
        "a/../b",
        "a/..",
        "back\\slash",
        "new\nline",
        "carriage\rreturn",
        "nul\x00byte",
        "tab\there",
        "del\x7fete",
        "x" * (MAX_KEY_BYTES + 1),
        "é" * (MAX_KEY_BYTES // 2) + "x",  # 1025 bytes in 513 characters
        "lone\udcffsurrogate",
    ],
)
def test_invalid_keys_raise_invalid_key(key: str) -> None:
    with pytest.raises(InvalidKey) as info:
        validate_key(key)
    assert (info.value.status, info.value.code) == (400, "invalid_key")


def test_new_key_is_a_valid_ulid_key() -> None:
    key = new_key()
    assert ULID_RE.fullmatch(key)
    assert validate_key(key) == key


def test_new_keys_are_unique() -> None:
    assert len({new_key() for _ in range(1000)}) == 1000


def test_key_digest_is_hex_sha256_without_the_key_text() -> None:
    digest = key_digest("../../etc/passwd")
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert "passwd" not in digest


def test_key_digest_is_stable_and_differs_between_keys() -> None:
    assert key_digest("clip.mp4") == key_digest("clip.mp4")
    assert key_digest("clip.mp4") != key_digest("clip.mp4.gz")


# ".vidproxy" itself: on rclone an object of that name and the directory of
# vidproxy's records cannot both exist (the second PutObject fails).
@pytest.mark.parametrize("key", [".vidproxy/uploads/x", ".vidproxy/a", ".vidproxy"])
def test_keys_under_the_reserved_prefix_are_refused(key: str) -> None:
    with pytest.raises(InvalidKey, match="vidproxy's own records"):
        validate_key(key)


def test_a_key_that_only_resembles_the_reserved_prefix_is_valid() -> None:
    assert validate_key(".vidproxyx") == ".vidproxyx"
    assert validate_key(".vidproxyx/a") == ".vidproxyx/a"
    assert validate_key("a/.vidproxy") == "a/.vidproxy"
