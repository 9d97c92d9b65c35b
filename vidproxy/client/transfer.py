"""Uploads and downloads that stream in fixed-size chunks: memory stays constant
whatever the size. Local file calls run in a thread, never on the event loop.

A download into a file first saves the object's ETag beside it (``FILE`` +
``ETAG_SUFFIX``) and removes it once the file is complete, so a download that
was cut off resumes with ``Range: bytes=N-`` and ``If-Range: <etag>``: the
server sends the rest if the object is unchanged, else all of it (RFC 9110
§13.1.5). Every download ends by checking the bytes against the server's
``X-Content-SHA256``, when it sends one.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import stat
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import aiohttp

from .api import Api, key_path
from .errors import ClientError, OutputClosed, ServerError
from .progress import Progress

CHUNK_BYTES = 256 * 1024
ETAG_SUFFIX = ".vidproxy-etag"
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")
_UNSATISFIED_RANGE = re.compile(r"bytes \*/(\d+)")

T = TypeVar("T")
MakeProgress = Callable[[int | None], Progress]


async def local(what: str | Path, fn: Callable[..., T], *args: Any) -> T:
    """Run a blocking file call in a thread; its OSError becomes a ClientError.
    A broken pipe (only writes meet one) means the output's reader is done."""
    try:
        return await asyncio.to_thread(fn, *args)
    except BrokenPipeError:
        raise OutputClosed() from None
    except OSError as exc:
        raise ClientError(f"{what}: {exc.strerror or exc}") from exc


# ---- upload --------------------------------------------------------------------


async def upload(
    api: Api,
    source: BinaryIO,
    size: int | None,
    key: str | None,
    content_type: str | None,
    progress: Progress,
) -> dict[str, Any]:
    """PUT ``source`` at ``key`` (POST, for a server-chosen key, when None).
    Without a ``size`` the body goes chunked, read as it arrives."""
    headers = {"Content-Length": str(size)} if size is not None else {}
    if content_type:
        headers["Content-Type"] = content_type
    method, path = ("PUT", key_path(key)) if key is not None else ("POST", "/videos")
    body = _chunks(source, progress, streaming=size is None)
    # Without one of ours, aiohttp would send application/octet-stream and
    # vidproxy would store that instead of guessing from the key or the bytes.
    skip = () if content_type else ("Content-Type",)
    stored: dict[str, Any] = await api.json(
        method, path, ok=(201,), headers=headers, data=body, skip_auto_headers=skip
    )
    progress.finish()
    return stored


async def _chunks(source: BinaryIO, progress: Progress, streaming: bool) -> AsyncIterator[bytes]:
    # read1 hands over what a pipe has now instead of waiting for a full chunk.
    read = source.read1 if streaming and hasattr(source, "read1") else source.read
    while chunk := await local("input", read, CHUNK_BYTES):
        progress.advance(len(chunk))
        yield chunk


# ---- download ------------------------------------------------------------------


def etag_path(path: Path) -> Path:
    return path.with_name(path.name + ETAG_SUFFIX)


async def download_to_stream(api: Api, key: str, sink: BinaryIO, progress: MakeProgress) -> None:
    async with api.request("GET", key_path(key)) as response:
        bar = progress(response.content_length)
        digest = await _copy_body(response, sink, hashlib.sha256(), bar, "output")
    _check_digest(response, digest)


async def download_to_file(
    api: Api,
    key: str,
    path: Path,
    progress: MakeProgress,
    note: Callable[[str], None],
    force_resume: bool = False,
) -> None:
    """Fetch ``key`` into ``path``, resuming a partial file. What is not a plain
    download (resumed, started over, already complete) is said through ``note``
    as soon as it is known, before the progress bar."""
    offset, etag = await local(path, _resume_point, path, force_resume)
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    if offset and etag:
        headers["If-Range"] = etag
    ok = (200, 206, 416) if offset else (200,)
    async with api.request("GET", key_path(key), ok=ok, headers=headers) as response:
        if response.status != 416:
            start = _resumed_from(response, offset)
            if start:
                note(f"{path}: resumed at {start} bytes")
            elif offset:
                note(f"{path}: started over")
            await _save(response, path, start, progress)
            return
        total = _unsatisfied_total(response)
    # 416: nothing lies past ``offset``. Complete if it is exactly the object.
    if total == offset and await _is_whole_object(api, key, path):
        await local(path, _remove, etag_path(path))
        note(f"{path}: already complete")
        return
    await local(path, _remove, etag_path(path))
    note(f"{path}: started over")
    await download_to_file(api, key, path, progress, note)


def _resume_point(path: Path, force: bool) -> tuple[int, str | None]:
    """Where to resume: after a partial file that has its ETag beside it, or
    (``force``) after any regular file, unchecked until the final digest."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return 0, None
    if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
        return 0, None
    try:
        etag: str | None = etag_path(path).read_text().strip() or None
    except FileNotFoundError:
        etag = None
    return (info.st_size, etag) if etag or force else (0, None)


def _resumed_from(response: aiohttp.ClientResponse, offset: int) -> int:
    if response.status == 200:
        return 0
    match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", ""))
    if match is None or int(match[1]) != offset:
        got = response.headers.get("Content-Range")
        raise ServerError(206, "bad_range", f"asked for bytes={offset}-, got Content-Range {got}")
    return offset


def _unsatisfied_total(response: aiohttp.ClientResponse) -> int | None:
    match = _UNSATISFIED_RANGE.fullmatch(response.headers.get("Content-Range", ""))
    return int(match[1]) if match else None


async def _is_whole_object(api: Api, key: str, path: Path) -> bool:
    async with api.request("HEAD", key_path(key)) as response:
        expected = response.headers.get("X-Content-SHA256")
    if expected is None:
        return False
    digest = hashlib.sha256()
    await local(path, _hash_prefix, path, None, digest)
    return digest.hexdigest() == expected.lower()


async def _save(
    response: aiohttp.ClientResponse, path: Path, start: int, progress: MakeProgress
) -> None:
    digest = hashlib.sha256()
    if start:
        await local(path, _hash_prefix, path, start, digest)
    sidecar = etag_path(path)
    etag = response.headers.get("ETag", "")
    # If-Range takes strong validators only (RFC 9110 §13.1.5).
    if etag and not etag.startswith("W/"):
        await local(sidecar, _save_etag, path, etag)
    sink = await local(path, _open_output, path, start)
    try:
        length = response.content_length
        bar = progress(None if length is None else start + length)
        bar.start_at(start)
        await _copy_body(response, sink, digest, bar, path)
    finally:
        await local(path, sink.close)
    try:
        _check_digest(response, digest)
    except ClientError:
        await local(path, _remove, path)
        raise
    finally:
        await local(sidecar, _remove, sidecar)


async def _copy_body(
    response: aiohttp.ClientResponse,
    sink: BinaryIO,
    digest: hashlib._Hash,
    bar: Progress,
    name: str | Path,
) -> hashlib._Hash:
    async for chunk in response.content.iter_chunked(CHUNK_BYTES):
        await local(name, _write_and_hash, sink, digest, chunk)
        bar.advance(len(chunk))
    await local(name, sink.flush)
    bar.finish()
    return digest


def _check_digest(response: aiohttp.ClientResponse, digest: hashlib._Hash) -> None:
    expected = response.headers.get("X-Content-SHA256")
    if expected is not None and digest.hexdigest() != expected.lower():
        raise ClientError("the bytes received do not match the server's X-Content-SHA256")


def _open_output(path: Path, start: int) -> BinaryIO:
    if not start:
        return path.open("wb")
    sink = path.open("r+b")
    sink.seek(start)
    sink.truncate()
    return sink


def _write_and_hash(sink: BinaryIO, digest: hashlib._Hash, chunk: bytes) -> None:
    sink.write(chunk)
    digest.update(chunk)


def _hash_prefix(path: Path, length: int | None, digest: hashlib._Hash) -> None:
    left = length
    with path.open("rb") as source:
        while left is None or left > 0:
            chunk = source.read(CHUNK_BYTES if left is None else min(CHUNK_BYTES, left))
            if not chunk:
                break
            digest.update(chunk)
            if left is not None:
                left -= len(chunk)


def _save_etag(path: Path, etag: str) -> None:
    """Keep ``etag`` beside ``path``, unless ``path`` is no file (``/dev/null``)."""
    if path.exists() and not path.is_file():
        return
    etag_path(path).write_text(etag + "\n")


def _remove(path: Path) -> None:
    if path.is_file():
        os.unlink(path)
