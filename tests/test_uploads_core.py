"""The framework-free tus core: header parsers, the record and its JSON, the
offset rules, and the resumable SHA-256 against hashlib."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vidproxy.errors import (
    InvalidUploadHeader,
    OffsetMismatch,
    TooLarge,
    TusVersionUnsupported,
    UnsupportedChecksum,
    UploadGone,
    UploadLocked,
)
from vidproxy.uploads.headers import (
    check_version,
    encode_metadata,
    http_date,
    parse_checksum,
    parse_metadata,
    parse_uint,
)
from vidproxy.uploads.locks import UploadLocks
from vidproxy.uploads.record import Part, UploadRecord, check_patch, declare_length
from vidproxy.uploads.sha256state import Sha256, resumable_available


@given(st.lists(st.binary(max_size=5000), max_size=8))
def test_a_saved_sha256_state_resumes_to_hashlib_s_digest(pieces: list[bytes]) -> None:
    assert resumable_available()
    state = None
    for piece in pieces:
        digest = Sha256(state)
        digest.update(piece)
        state = digest.state()
    assert Sha256(state).hexdigest() == hashlib.sha256(b"".join(pieces)).hexdigest()


def test_a_sha256_digest_can_be_taken_midway_and_the_hash_goes_on() -> None:
    digest = Sha256()
    digest.update(memoryview(bytearray(b"abc")))
    assert digest.hexdigest() == hashlib.sha256(b"abc").hexdigest()
    twin = digest.copy()
    digest.update(b"def")
    assert digest.hexdigest() == hashlib.sha256(b"abcdef").hexdigest()
    assert twin.hexdigest() == hashlib.sha256(b"abc").hexdigest()


def test_a_state_that_is_not_one_is_refused() -> None:
    with pytest.raises(ValueError):
        Sha256("00" * 5)


def test_metadata_round_trips_and_allows_keys_without_values() -> None:
    header = encode_metadata({"key": "a b/ä.mp4", "create_only": None})
    assert header == "key YSBiL8OkLm1wNA==,create_only"
    assert parse_metadata(header) == {"key": "a b/ä.mp4", "create_only": None}
    assert parse_metadata("") == {}
    assert parse_metadata(None) == {}


@pytest.mark.parametrize("header", ["key a,key b", "k\x7f YQ==", "key !!!", " ,x", "key YQ"])
def test_malformed_metadata_is_refused(header: str) -> None:
    with pytest.raises(InvalidUploadHeader):
        parse_metadata(header)


@pytest.mark.parametrize("value", ["-1", "1.5", "", "²", "1" * 20, "0x10"])
def test_offsets_and_lengths_are_bounded_ascii_digits(value: str) -> None:
    with pytest.raises(InvalidUploadHeader):
        parse_uint("Upload-Offset", value)


def test_checksums_name_an_offered_algorithm_and_a_base64_digest() -> None:
    parsed = parse_checksum("sha1 " + "Kq5sNclPz7QV2+lfQIuc6R7oRu0=")
    assert parsed is not None
    assert parsed.algorithm == "sha1"
    assert parsed.digest == hashlib.sha1(b"hello world").digest()
    with pytest.raises(UnsupportedChecksum):
        parse_checksum("crc32 AAAA")
    with pytest.raises(InvalidUploadHeader):
        parse_checksum("md5 ***")
    assert parse_checksum(None) is None


def test_only_tus_1_0_0_is_spoken() -> None:
    check_version("1.0.0")
    for value in (None, "1.0", "0.2.2"):
        with pytest.raises(TusVersionUnsupported) as caught:
            check_version(value)
        assert caught.value.headers() == {"Tus-Version": "1.0.0"}


def test_upload_expires_is_an_rfc_9110_date() -> None:
    assert http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"


def record(**changes: object) -> UploadRecord:
    values: dict[str, object] = {
        "id": "01JD0000000000000000000000",
        "key": "k",
        "length": 10,
        "metadata": {},
        "content_type": None,
        "create_only": False,
        "expires": 2e9,
    }
    values.update(changes)
    return UploadRecord(**values)  # type: ignore[arg-type]


def test_a_record_round_trips_through_json_without_its_etag() -> None:
    original = record(parts=[Part(1, '"e"', 5)], tail_size=3, offset=8, stored_etag='"x"')
    data = json.loads(json.dumps(original.to_json()))
    assert "stored_etag" not in data
    assert UploadRecord.from_json(data) == original


def test_a_record_of_another_format_is_refused() -> None:
    with pytest.raises(ValueError):
        UploadRecord.from_json({**record().to_json(), "format": 99})


def test_a_patch_must_be_at_the_offset_of_a_live_unfinished_upload() -> None:
    check_patch(record(offset=4), 4, now=0)
    with pytest.raises(OffsetMismatch):
        check_patch(record(offset=4), 3, now=0)
    with pytest.raises(UploadGone):
        check_patch(record(offset=4), 4, now=3e9)
    with pytest.raises(OffsetMismatch):
        check_patch(record(offset=10, completed=True), 10, now=0)


def test_a_deferred_length_is_declared_once_and_within_limits() -> None:
    deferred = record(length=None, offset=5)
    with pytest.raises(InvalidUploadHeader):
        declare_length(deferred, 4, 100)
    with pytest.raises(TooLarge):
        declare_length(deferred, 101, 100)
    declare_length(deferred, 7, 100)
    assert deferred.length == 7
    declare_length(deferred, 7, 100)
    with pytest.raises(InvalidUploadHeader):
        declare_length(deferred, 8, 100)


def test_an_upload_is_held_by_one_request_at_a_time() -> None:
    locks = UploadLocks()
    with locks.hold("a"):
        assert locks.is_held("a")
        with pytest.raises(UploadLocked), locks.hold("a"):
            pass
        with locks.hold("b"):
            pass
    assert not locks.is_held("a")
