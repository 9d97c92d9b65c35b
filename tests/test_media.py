"""media.py: the Content-Type header is validated, else guessed from the key, else
sniffed; only media and raster images are shown inline, the rest is an attachment."""

from __future__ import annotations

import re
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vidproxy.errors import BadRequest
from vidproxy.media import (
    FALLBACK_TYPE,
    MAX_CONTENT_TYPE_LENGTH,
    attachment_disposition,
    choose_content_type,
    guess_from_key,
    safe_content_type,
    shown_inline,
    sniff,
    validate_content_type,
)

MP4_HEAD = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41"
MOV_HEAD = b"\x00\x00\x00\x14ftypqt  \x00\x00\x02\x00qt  "
WEBM_HEAD = b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\x82\x84webm"
MKV_HEAD = b"\x1a\x45\xdf\xa3\xa3\x42\x86\x81\x01\x42\xf7\x81\x01\x42\x82\x88matroska"
TS_HEAD = (b"\x47\x40\x00\x10" + b"\xff" * 184) * 3
OGG_THEORA_HEAD = b"OggS\x00\x02" + b"\x00" * 22 + b"\x80theora" + b"\x00" * 20
OGG_VORBIS_HEAD = b"OggS\x00\x02" + b"\x00" * 22 + b"\x01vorbis" + b"\x00" * 20


@pytest.mark.parametrize(
    "value",
    [
        "video/mp4",
        "video/webm; codecs=vp9",
        'video/mp4; codecs="avc1.42E01E, mp4a.40.2"',
        "application/vnd.apple.mpegurl",
        "text/plain;charset=utf-8",
    ],
)
def test_valid_content_type_is_kept(value: str) -> None:
    assert validate_content_type(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        "video/",
        "/mp4",
        "video/mp4 extra",
        "video/mp4; codecs",
        "video/mp4\r\nX-Injected: 1",
        "vidéo/mp4",
        "video/" + "x" * MAX_CONTENT_TYPE_LENGTH,
    ],
)
def test_malformed_content_type_raises_invalid_content_type(value: str) -> None:
    with pytest.raises(BadRequest) as info:
        validate_content_type(value)
    assert (info.value.status, info.value.code) == (400, "invalid_content_type")


@pytest.mark.parametrize("stored", [None, "", "bad\r\nheader", "no-slash"])
def test_unsendable_stored_type_becomes_the_fallback(stored: str | None) -> None:
    assert safe_content_type(stored) == FALLBACK_TYPE


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("clip.mp4", "video/mp4"),
        ("dir/CLIP.MP4", "video/mp4"),
        ("a.webm", "video/webm"),
        ("a.mkv", "video/x-matroska"),
        ("segment.ts", "video/mp2t"),
        ("list.m3u8", "application/vnd.apple.mpegurl"),
        ("a.mov", "video/quicktime"),
        ("notes.txt", "text/plain"),
    ],
)
def test_type_is_guessed_from_the_key_extension(key: str, expected: str) -> None:
    assert guess_from_key(key) == expected


@pytest.mark.parametrize("key", ["noext", "dir.mp4/noext", ".mp4", "a.unknownext"])
def test_no_guess_without_a_known_extension_on_the_last_segment(key: str) -> None:
    assert guess_from_key(key) is None


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (MP4_HEAD, "video/mp4"),
        (MOV_HEAD, "video/quicktime"),
        (WEBM_HEAD, "video/webm"),
        (MKV_HEAD, "video/x-matroska"),
        (TS_HEAD, "video/mp2t"),
        (OGG_THEORA_HEAD, "video/ogg"),
        (OGG_VORBIS_HEAD, "audio/ogg"),
        (b"#EXTM3U\n#EXT-X-VERSION:3\n", "application/vnd.apple.mpegurl"),
    ],
)
def test_containers_are_sniffed_from_their_first_bytes(head: bytes, expected: str) -> None:
    assert sniff(head) == expected


@pytest.mark.parametrize("head", [b"", b"hello world", b"\x47" * 100, b"\x00\x00\x00\x20ftyp"])
def test_unrecognised_or_short_heads_are_not_sniffed(head: bytes) -> None:
    assert sniff(head) is None


def test_header_wins_over_key_and_bytes() -> None:
    assert choose_content_type("video/webm", "clip.mp4", MP4_HEAD) == "video/webm"


def test_key_wins_over_bytes() -> None:
    assert choose_content_type(None, "clip.mkv", MP4_HEAD) == "video/x-matroska"


def test_bytes_decide_when_the_key_has_no_extension() -> None:
    assert choose_content_type(None, "clip", WEBM_HEAD) == "video/webm"


def test_fallback_when_nothing_is_known() -> None:
    assert choose_content_type(None, "clip", b"just bytes") == FALLBACK_TYPE


def test_bad_header_is_rejected_even_with_a_good_key() -> None:
    with pytest.raises(BadRequest):
        choose_content_type("garbage", "clip.mp4", MP4_HEAD)


@pytest.mark.parametrize(
    "value",
    [
        "video/mp4",
        "video/webm; codecs=vp9",
        "VIDEO/X-Matroska",
        "audio/ogg",
        "image/png",
        "image/JPEG",
        "image/gif ; x=y",
        "image/webp",
    ],
)
def test_media_and_raster_images_are_shown_inline(value: str) -> None:
    assert shown_inline(value)


@pytest.mark.parametrize(
    "value",
    [
        "text/html",
        "text/html; charset=utf-8",
        "image/svg+xml",
        "application/xhtml+xml",
        "text/xml",
        "application/xml",
        "application/pdf",
        "application/octet-stream",
        "text/plain",
        "application/vnd.apple.mpegurl",
        "application/dash+xml",
        "image/x-icon",
        "multipart/x-mixed-replace",
        "videos/mp4",
    ],
)
def test_everything_else_is_a_download(value: str) -> None:
    assert not shown_inline(value)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("clip.html", 'attachment; filename="clip.html"'),
        ("a/b/My Clip (1).svg", 'attachment; filename="My Clip (1).svg"'),
        ("x/100%.html", "attachment; filename=\"100_.html\"; filename*=UTF-8''100%25.html"),
        (
            "vidéo ✓.html",
            "attachment; filename=\"vid_o _.html\"; filename*=UTF-8''vid%C3%A9o%20%E2%9C%93.html",
        ),
        ("it's.txt", 'attachment; filename="it\'s.txt"'),
    ],
)
def test_attachments_are_named_after_the_last_key_segment(key: str, expected: str) -> None:
    assert attachment_disposition(key) == expected


# RFC 6266 §4.1 with a quoted filename, optionally followed by an RFC 5987 filename*.
_DISPOSITION_RE = re.compile(
    r'attachment; filename="((?:[ !#$&-\[\]-~])*)"'
    r"(?:; filename\*=UTF-8''([!#$&+\-.^_`|~0-9A-Za-z%]*))?"
)


@given(st.text(st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=40))
def test_any_name_makes_a_sendable_header_that_keeps_it_exactly(name: str) -> None:
    value = attachment_disposition("folder/" + name.replace("/", "_"))
    match = _DISPOSITION_RE.fullmatch(value)
    assert match is not None, value
    plain, extended = match.groups()
    exact = name.replace("/", "_")
    if extended is None:
        assert plain == exact
    else:
        assert unquote(extended, errors="strict") == exact
