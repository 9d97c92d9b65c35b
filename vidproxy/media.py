"""Content types: validate what the client sent, else guess from the key, else sniff;
and how a stored type may be presented to a browser (inline, or as a download)."""

from __future__ import annotations

import mimetypes
import re
from urllib.parse import quote

from .errors import InvalidContentType

FALLBACK_TYPE = "application/octet-stream"
# Enough for every signature below, MPEG-TS's second sync byte included.
SNIFF_BYTES = 512
MAX_CONTENT_TYPE_LENGTH = 255

# RFC 9110 §8.3.1: type "/" subtype *( OWS ";" OWS parameter ), tokens only.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PARAM = rf"{_TOKEN}=(?:{_TOKEN}|\"[^\"\\\x00-\x1f\x7f]*\")"
_MEDIA_TYPE_RE = re.compile(rf"{_TOKEN}/{_TOKEN}(?:[ \t]*;[ \t]*{_PARAM})*")

_VIDEO_TYPES = {
    ".mp4": "video/mp4",
    ".m4v": "video/mp4",
    ".m4a": "audio/mp4",
    ".mov": "video/quicktime",
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
    ".ts": "video/mp2t",
    ".m3u8": "application/vnd.apple.mpegurl",
    ".mpd": "application/dash+xml",
    ".ogv": "video/ogg",
    ".ogg": "audio/ogg",
    ".avi": "video/x-msvideo",
    ".flv": "video/x-flv",
}


# What a browser shows inline without building a document from the stored bytes:
# its own media player, or a raster image. Never SVG or XML (they carry script),
# HTML, PDF, text, or anything unknown: those are downloads.
_INLINE_MAJOR_TYPES = frozenset({"video", "audio"})
_INLINE_IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
# RFC 5987 §3.2.1 attr-char, less ALPHA / DIGIT (which quote() never escapes).
_ATTR_CHAR_PUNCTUATION = "!#$&+-.^_`|~"
# Printable ASCII goes into the quoted filename as is, except these: the quote
# and backslash would need escaping, and some browsers percent-decode "%".
_UNQUOTABLE = frozenset('"\\%')


def shown_inline(content_type: str) -> bool:
    """Whether a browser may render a stored object of this type in place."""
    essence = content_type.partition(";")[0].strip().lower()
    return essence.partition("/")[0] in _INLINE_MAJOR_TYPES or essence in _INLINE_IMAGE_TYPES


def attachment_disposition(key: str) -> str:
    """``Content-Disposition: attachment`` named after the key's last segment:
    an ASCII ``filename`` for every browser, and ``filename*`` (RFC 6266 §4.3,
    RFC 5987) with the exact name when that one had to be changed."""
    name = key.rsplit("/", 1)[-1]
    plain = "".join(c if " " <= c <= "~" and c not in _UNQUOTABLE else "_" for c in name)
    value = f'attachment; filename="{plain}"'
    if plain != name:
        value += "; filename*=UTF-8''" + quote(name, safe=_ATTR_CHAR_PUNCTUATION)
    return value


def validate_content_type(value: str) -> str:
    """Accept a well-formed media type only, so a stored value can never
    break the headers of a later GET."""
    value = value.strip()
    if len(value) > MAX_CONTENT_TYPE_LENGTH or not _MEDIA_TYPE_RE.fullmatch(value):
        raise InvalidContentType("Content-Type is not a valid media type")
    return value


def safe_content_type(value: str | None) -> str:
    """A stored type fit to send back; anything else becomes the fallback."""
    if value and len(value) <= MAX_CONTENT_TYPE_LENGTH and _MEDIA_TYPE_RE.fullmatch(value):
        return value
    return FALLBACK_TYPE


def guess_from_key(key: str) -> str | None:
    name = key.rsplit("/", 1)[-1].lower()
    dot = name.rfind(".")
    if dot <= 0:
        return None
    ext = name[dot:]
    return _VIDEO_TYPES.get(ext) or mimetypes.guess_type(f"x{ext}", strict=False)[0]


def sniff(head: bytes) -> str | None:
    """Recognise the containers ffmpeg and cameras write from their first bytes."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return "video/quicktime" if head[8:10] == b"qt" else "video/mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm" if b"webm" in head[:64] else "video/x-matroska"
    if head.startswith(b"OggS"):
        return "video/ogg" if b"theora" in head[:128] else "audio/ogg"
    if len(head) > 188 and head[0] == 0x47 and head[188] == 0x47:
        return "video/mp2t"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "video/x-msvideo"
    if head.startswith(b"FLV"):
        return "video/x-flv"
    if head.startswith(b"#EXTM3U"):
        return "application/vnd.apple.mpegurl"
    return None


def choose_content_type(header: str | None, key: str, head: bytes) -> str:
    if header:
        return validate_content_type(header)
    return guess_from_key(key) or sniff(head) or FALLBACK_TYPE
