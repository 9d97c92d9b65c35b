"""The fs store on its own, where HTTP cannot place a cancel: a replaced
version's file goes, even when the close that frees it is cancelled.

The rest of the fs store is covered over HTTP (test_videos.py, test_uploads.py
and the others run on both backends)."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

from rigs.threads import hold_the_one_worker

from vidproxy.storage.fs import FsStore


class Body:
    """An ``UploadSource`` over bytes in memory."""

    expected_sha256 = None

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0
        self.content_length: int | None = len(data)

    async def readinto(self, buffer: memoryview) -> int:
        piece = self._data[self._at : self._at + len(buffer)]
        buffer[: len(piece)] = piece
        self._at += len(piece)
        return len(piece)

    def sha256(self) -> str:
        return hashlib.sha256(self._data).hexdigest()


async def test_a_replaced_version_is_unlinked_even_when_its_last_readers_close_is_cancelled(
    tmp_path: Path,
) -> None:
    # The version a reader still holds is unlinked when it closes. A cancel
    # (shutdown) there dropped the unlink still queued for a thread, and the
    # file stayed, named by nothing, until the next start. One busy worker
    # thread keeps the unlink queued.
    store = FsStore(tmp_path)
    store.prepare()
    await store.put("a.mp4", Body(b"first version"), "video/mp4")  # type: ignore[arg-type]
    reader = await store.open("a.mp4", None)
    await store.put("a.mp4", Body(b"second version"), "video/mp4")  # type: ignore[arg-type]
    held = reader.local_path
    assert held is not None and held.exists()  # retired, kept for its reader
    busy = hold_the_one_worker()

    closing = asyncio.create_task(reader.aclose())
    await asyncio.sleep(0)  # one turn of the loop: the close is at its unlink, queued
    closing.cancel()
    # Where the cancel drops the unlink, the close ends at once; else it waits
    # for the unlink, which the busy thread holds up until it is let go.
    await asyncio.wait([closing], timeout=0.5)
    busy.set()
    await asyncio.gather(closing, return_exceptions=True)

    assert not held.exists()
    current = await store.open("a.mp4", None)
    assert b"".join([piece async for piece in await current.stream(None)]) == b"second version"
    await current.aclose()
