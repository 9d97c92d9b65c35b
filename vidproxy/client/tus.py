"""``vidproxy upload FILE`` over tus 1.0 (``/uploads``), so that running the
same command again after Ctrl-C or a dropped connection resumes.

A run creates the upload (``POST /uploads``, the key and Content-Type in
``Upload-Metadata``), saves its URL (``resume``), then sends the file in
PATCHes of ``PATCH_BYTES``. A later run of the same command finds the saved
URL, asks the server with HEAD how many bytes it holds (only durably stored
ones count) and sends the rest. The file's SHA-256 is computed as it is
sent (the stored prefix is re-read on a resume) and checked against the
``X-Content-SHA256`` that the last PATCH answers with.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import unquote

from multidict import CIMultiDictProxy
from yarl import URL

from .api import Api
from .errors import ClientError, ConnectionFailed, ServerError
from .progress import Progress
from .resume import UploadIdentity, forget_upload, load_upload_url, save_upload_url
from .transfer import local

TUS_VERSION = "1.0.0"
UPLOADS_PATH = "/uploads"
OFFSET_STREAM = "application/offset+octet-stream"
# A PATCH this long is one request of a 64 MiB body: few round trips, and the
# server keeps every durably stored byte of a PATCH that is cut off anyway.
PATCH_BYTES = 64 * 1024 * 1024
CHUNK_BYTES = 256 * 1024
# Right after a cut the server may still be storing the cut PATCH's bytes: it
# answers 423 (locked) or 409 (another offset) until then. Ask again, a while.
CONFLICT_STATUSES = (409, 423)
CONFLICT_RETRIES = 20
CONFLICT_BACKOFF = 0.5  # seconds
GONE_STATUSES = (403, 404, 410)  # a saved upload that cannot be continued
NO_TUS_STATUSES = (404, 405)  # POST /uploads on a vidproxy without tus

Note = Callable[[str], None]


class NoTusServer(Exception):
    """The server has no ``/uploads``: the caller falls back to a plain PUT."""


@dataclass
class Sent:
    """Where a run stands: the server's offset, and the SHA-256 of the file up to it."""

    offset: int
    digest: hashlib._Hash


async def tus_upload(
    api: Api,
    name: str,
    identity: UploadIdentity,
    progress: Progress,
    note: Note,
) -> str:
    """Upload file ``name`` (``identity.size`` > 0 bytes) to ``identity.key``,
    resuming a saved upload; returns the key the server stored it under."""
    url, offset = await _resume_or_create(api, identity, name, note)
    if offset:
        note(f"{name}: resumed at {offset} bytes")
    progress.start_at(offset)
    with await local(name, _open_binary, name) as source:
        sent = Sent(offset, await local(name, _hash_prefix, source, offset))
        headers = await _send_rest(api, url, source, identity.size, sent, progress)
    progress.finish()
    forget_upload(identity)
    _check_digest(headers, sent.digest)
    return unquote(headers.get("X-Video-Key", "")) or identity.key


async def _resume_or_create(
    api: Api, identity: UploadIdentity, name: str, note: Note
) -> tuple[URL, int]:
    saved = load_upload_url(identity)
    if saved is not None:
        offset = await _stored_offset(api, URL(saved, encoded=True), identity.size)
        if offset is not None:
            return URL(saved, encoded=True), offset
        forget_upload(identity)
        note(f"{name}: the earlier upload is gone; started over")
    url = await _create(api, identity)
    save_upload_url(identity, str(url))
    return url, 0


async def _stored_offset(api: Api, url: URL, size: int) -> int | None:
    """HEAD: the offset the server holds, or None if the upload cannot go on."""
    async with api.request("HEAD", url, ok=(200, 204, *GONE_STATUSES), headers=_tus()) as answer:
        if answer.status in GONE_STATUSES:
            return None
        length = answer.headers.get("Upload-Length")
        if length is not None and int(length) != size:
            return None
        return _offset_header(answer.headers)


async def _create(api: Api, identity: UploadIdentity) -> URL:
    metadata = {"key": identity.key}
    if identity.content_type:
        metadata["filetype"] = identity.content_type
    headers = _tus(
        {"Upload-Length": str(identity.size), "Upload-Metadata": encode_metadata(metadata)}
    )
    post = api.url(UPLOADS_PATH)
    async with api.request("POST", post, ok=(201, *NO_TUS_STATUSES), headers=headers) as answer:
        if answer.status in NO_TUS_STATUSES:
            raise NoTusServer()
        location = answer.headers.get("Location")
    if not location:
        raise ServerError(201, "bad_answer", "POST /uploads answered without a Location")
    return resolve_location(api.base, post, location)


def _open_binary(name: str) -> BinaryIO:
    return open(name, "rb")


async def _send_rest(
    api: Api, url: URL, source: BinaryIO, size: int, sent: Sent, progress: Progress
) -> CIMultiDictProxy[str]:
    """PATCH from ``sent.offset`` to the end; the last PATCH's answer headers."""
    conflicts = 0
    while True:
        length = min(PATCH_BYTES, size - sent.offset)
        try:
            headers = await _patch(api, url, source, sent, length, progress)
        except ServerError as exc:
            conflicts += 1
            if exc.status not in CONFLICT_STATUSES or conflicts > CONFLICT_RETRIES:
                raise
            await asyncio.sleep(CONFLICT_BACKOFF)
            await _catch_up(api, url, source, size, sent, progress)
            continue
        except ConnectionFailed as exc:
            raise ConnectionFailed(f"{exc}; run the same command again to resume") from exc
        conflicts = 0
        if sent.offset == size:
            return headers


async def _patch(
    api: Api, url: URL, source: BinaryIO, sent: Sent, length: int, progress: Progress
) -> CIMultiDictProxy[str]:
    start = sent.offset
    headers = _tus(
        {
            "Upload-Offset": str(start),
            "Content-Type": OFFSET_STREAM,
            "Content-Length": str(length),
        }
    )
    body = _slice(source, start, length, sent.digest, progress)
    async with api.request("PATCH", url, ok=(204,), headers=headers, data=body) as answer:
        offset = _offset_header(answer.headers)
        if offset != start + length:
            raise ServerError(
                204, "bad_offset", f"PATCH of bytes {start}-{start + length} answered {offset}"
            )
        sent.offset = offset
        return answer.headers


async def _catch_up(
    api: Api, url: URL, source: BinaryIO, size: int, sent: Sent, progress: Progress
) -> None:
    """After a conflict: the server's offset, and the file's digest up to it again."""
    offset = await _stored_offset(api, url, size)
    if offset is None:
        raise ClientError(f"{url}: the upload is gone from the server")
    sent.offset = offset
    sent.digest = await local("input", _hash_prefix, source, offset)
    progress.start_at(offset)


async def _slice(
    source: BinaryIO, start: int, length: int, digest: hashlib._Hash, progress: Progress
) -> AsyncIterator[bytes]:
    await local("input", source.seek, start)
    left = length
    while left > 0:
        chunk = await local("input", source.read, min(CHUNK_BYTES, left))
        if not chunk:
            raise ClientError("the file got shorter while it was being uploaded")
        digest.update(chunk)
        progress.advance(len(chunk))
        left -= len(chunk)
        yield chunk


def _hash_prefix(source: BinaryIO, length: int) -> hashlib._Hash:
    digest = hashlib.sha256()
    source.seek(0)
    left = length
    while left > 0 and (chunk := source.read(min(CHUNK_BYTES, left))):
        digest.update(chunk)
        left -= len(chunk)
    return digest


def _check_digest(headers: CIMultiDictProxy[str], digest: hashlib._Hash) -> None:
    expected = headers.get("X-Content-SHA256")
    if expected is not None and expected.lower() != digest.hexdigest():
        raise ClientError("the stored bytes do not match the file (X-Content-SHA256 differs)")


def _offset_header(headers: CIMultiDictProxy[str]) -> int:
    text = headers.get("Upload-Offset", "")
    if not text.isdigit():
        raise ServerError(200, "bad_answer", f"Upload-Offset {text!r} is not a byte count")
    return int(text)


def _tus(headers: dict[str, str] | None = None) -> dict[str, str]:
    return {"Tus-Resumable": TUS_VERSION, **(headers or {})}


def encode_metadata(pairs: dict[str, str]) -> str:
    """``Upload-Metadata``: comma-separated ``name base64(value)`` pairs (tus 1.0)."""
    return ",".join(
        f"{name} {base64.b64encode(value.encode()).decode()}" for name, value in pairs.items()
    )


def resolve_location(base: URL, post: URL, location: str) -> URL:
    """The upload's URL from the creation answer's ``Location``, resolved against
    the POST's URL (tus 1.0). Behind a reverse proxy at a prefix (``--url
    http://host/vp``) vidproxy, which does not know the prefix, answers
    ``/uploads/ID``: the prefix is put back in front."""
    url = post.join(URL(location, encoded=True))
    prefix = base.raw_path.rstrip("/")
    same_origin = url.origin() == base.origin()
    if prefix and same_origin and not url.raw_path.startswith(prefix + "/"):
        tail = url.raw_path + (f"?{url.raw_query_string}" if url.raw_query_string else "")
        url = URL(str(base.origin()) + prefix + tail, encoded=True)
    return url
