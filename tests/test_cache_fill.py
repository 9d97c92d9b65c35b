"""``Fill`` on its own: bytes readable as they arrive, from memory at the front
and from the temp file behind it, and every byte even when the disk fails.

The backend here is a list of chunks handed over one step at a time, so a test
decides exactly how far the fill has got; the S3 path is covered over HTTP in
test_cache.py.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cache_rig import random_bytes
from manual_clock import ManualClock
from rigs.threads import hold_the_one_worker

from vidproxy.cache.budget import DiskBudget
from vidproxy.cache.disk import CacheDir
from vidproxy.cache.fill import KEEP_BEHIND, WRITE_AHEAD, WRITE_BATCH, Fill, read_following
from vidproxy.cache.index import Entry, EntryIndex
from vidproxy.conditions import ByteRange
from vidproxy.config import CacheConfig
from vidproxy.storage.base import ObjectInfo
from vidproxy.units import KiB, MiB

CHUNK = 100 * KiB  # not a divisor of the batch size, so batches end mid-way


class Backend:
    """An object handed out in chunks, ``release``d a few at a time."""

    def __init__(self, body: bytes, chunk: int = CHUNK) -> None:
        self.body = body
        self._chunks = [body[i : i + chunk] for i in range(0, len(body), chunk)]
        self._released = asyncio.Semaphore(0)
        self.ranges: list[ByteRange] = []

    def release(self, chunks: int = 1_000_000) -> None:
        for _ in range(chunks):
            self._released.release()

    async def chunks(self, stop_after: int | None = None) -> AsyncIterator[bytes]:
        for number, chunk in enumerate(self._chunks):
            if number == stop_after:
                return
            await self._released.acquire()
            yield chunk

    # ObjectReader, for the bytes the fill does not bring
    async def stream(self, byte_range: ByteRange | None) -> AsyncIterator[bytes]:
        wanted = byte_range or ByteRange(0, len(self.body))
        self.ranges.append(wanted)

        async def gen() -> AsyncIterator[bytes]:
            yield self.body[wanted.start : wanted.stop]

        return gen()


def make_fill(tmp_path: Path, backend: Backend, kind: type[Fill] = Fill) -> Fill:
    info = ObjectInfo("a.mp4", len(backend.body), '"tag"', datetime.now(UTC), "video/mp4", None)
    return kind(info, backend, tmp_path / "fill.tmp")  # type: ignore[arg-type]


async def read_all(fill: Fill, byte_range: ByteRange) -> bytes:
    return b"".join([bytes(piece) async for piece in read_following(fill, byte_range)])


async def test_the_whole_object_reaches_readers_and_the_temp_file(tmp_path: Path) -> None:
    backend = Backend(random_bytes(7 * MiB + 5, 1))
    fill = make_fill(tmp_path, backend)
    reader = asyncio.create_task(read_all(fill, ByteRange(0, len(backend.body))))
    backend.release()

    await fill.run(backend.chunks())

    assert fill.complete and fill.written == len(backend.body)
    assert (tmp_path / "fill.tmp").read_bytes() == backend.body
    assert await reader == backend.body
    assert backend.ranges == []  # nothing came from outside the fill


async def test_the_first_bytes_are_readable_before_anything_is_written(tmp_path: Path) -> None:
    backend = Backend(random_bytes(3 * MiB, 2))
    fill = make_fill(tmp_path, backend)
    running = asyncio.create_task(fill.run(backend.chunks()))
    backend.release(1)

    await fill.wait_past(0)
    first = await fill.read(0, CHUNK)

    assert bytes(first) == backend.body[:CHUNK]
    assert fill.written == 0  # a batch is not full yet: the bytes came from memory
    backend.release()
    await running


async def test_a_reader_far_behind_the_front_reads_the_temp_file(tmp_path: Path) -> None:
    body = random_bytes(KEEP_BEHIND + 4 * WRITE_BATCH + 7, 3)
    backend = Backend(body)
    fill = make_fill(tmp_path, backend)
    running = asyncio.create_task(fill.run(backend.chunks()))
    backend.release()
    await running

    # By now the first bytes have left memory; they must come from the file.
    assert await read_all(fill, ByteRange(0, len(body))) == body
    assert await read_all(fill, ByteRange(123, 456_789)) == body[123:456_789]


async def test_readers_joining_at_every_stage_get_their_bytes(tmp_path: Path) -> None:
    body = random_bytes(6 * MiB + 77, 4)
    backend = Backend(body)
    fill = make_fill(tmp_path, backend)
    running = asyncio.create_task(fill.run(backend.chunks()))
    wanted = [
        ByteRange(0, len(body)),
        ByteRange(MiB + 1, 5 * MiB),
        ByteRange(len(body) - 9, len(body)),
    ]
    readers = []
    for step in range(1, 9):
        readers += [asyncio.create_task(read_all(fill, r)) for r in wanted]
        backend.release(8)
        await fill.wait_past(step * 8 * CHUNK - 1)  # the next readers join further on
    backend.release()
    await running

    results = await asyncio.gather(*readers)

    assert results == [body[r.start : r.stop] for r in wanted] * 8


async def test_an_empty_object_leaves_an_empty_temp_file(tmp_path: Path) -> None:
    backend = Backend(b"")
    fill = make_fill(tmp_path, backend)

    await fill.run(backend.chunks())

    assert fill.complete and (tmp_path / "fill.tmp").read_bytes() == b""


async def test_a_backend_that_ends_short_fails_the_fill_and_readers_get_the_rest(
    tmp_path: Path,
) -> None:
    body = random_bytes(3 * MiB, 5)
    backend = Backend(body)
    fill = make_fill(tmp_path, backend)
    reader = asyncio.create_task(read_all(fill, ByteRange(0, len(body))))
    backend.release()

    try:
        await fill.run(backend.chunks(stop_after=12))
    except OSError as exc:
        assert "sent" in str(exc)
    else:
        raise AssertionError("a short body must fail the fill")

    assert not fill.complete and fill.ended
    assert await reader == body
    assert backend.ranges == [ByteRange(12 * CHUNK, len(body))]


async def test_a_disk_that_refuses_the_temp_file_still_gives_every_byte(tmp_path: Path) -> None:
    body = random_bytes(3 * MiB, 6)
    backend = Backend(body)
    info = ObjectInfo("a.mp4", len(body), '"tag"', datetime.now(UTC), "video/mp4", None)
    fill = Fill(info, backend, tmp_path / "missing-dir" / "fill.tmp")  # type: ignore[arg-type]
    reader = asyncio.create_task(read_all(fill, ByteRange(0, len(body))))
    backend.release()

    try:
        await fill.run(backend.chunks())
    except OSError:
        pass
    else:
        raise AssertionError("the temp file cannot be created")

    assert not fill.complete and fill.written == 0
    assert await reader == body


class StalledDisk(Fill):
    """A fill whose disk writes wait until ``go`` is set (writeback stalling them)."""

    go = threading.Event()

    def _write(self, batch: list[bytes], offset: int) -> int:  # type: ignore[override]
        self.go.wait(30)
        return super()._write(batch, offset)


async def test_a_stalled_disk_write_does_not_hold_the_reader_up(
    tmp_path: Path, wait_until: Any
) -> None:
    body = random_bytes(WRITE_AHEAD + 3 * WRITE_BATCH, 12)
    backend = Backend(body)
    fill = make_fill(tmp_path, backend, StalledDisk)
    StalledDisk.go.clear()
    backend.release()
    task = asyncio.create_task(fill.run(backend.chunks()))
    # The first batch is stuck in its write; the fill receives on up to WRITE_AHEAD.
    await wait_until(lambda: fill.filled >= WRITE_AHEAD, "bytes received past the stalled write")
    assert fill.written == 0
    assert fill.filled - fill.written <= WRITE_AHEAD + WRITE_BATCH + CHUNK  # memory stays bounded
    StalledDisk.go.set()
    await task
    assert (fill.complete, (tmp_path / "fill.tmp").read_bytes() == body) == (True, True)
    fill.close()


async def test_a_fill_cancelled_twice_returns_only_once_its_write_is_done(
    tmp_path: Path, wait_until: Any
) -> None:
    # The last reader leaving cancels a fill, and shutdown cancels it again. Had
    # the second cancel let ``run`` return while its first write was still in
    # the thread, the thread would create the temp file after the caller's
    # unlink (the soak test found such files left in tmp/).
    backend = Backend(random_bytes(2 * WRITE_BATCH, 13))
    fill = make_fill(tmp_path, backend, StalledDisk)
    StalledDisk.go.clear()
    backend.release()
    task = asyncio.create_task(fill.run(backend.chunks()))
    await wait_until(lambda: fill.filled >= WRITE_BATCH, "the first batch sent to the disk")

    task.cancel()
    await wait_until(lambda: fill.ended, "the first cancel in the fill's cleanup")
    task.cancel()
    # A run that does not wait for its write returns at once; this one cannot
    # until the disk is let go.
    await asyncio.wait([task], timeout=0.5)
    returned_while_writing = task.done()
    StalledDisk.go.set()
    await asyncio.gather(task, return_exceptions=True)

    assert not returned_while_writing
    assert task.cancelled()
    assert (tmp_path / "fill.tmp").exists()  # created before run returned: the unlink sees it
    fill.close()


async def test_a_fill_cancelled_while_it_waits_for_room_still_frees_it(
    tmp_path: Path, wait_until: Any
) -> None:
    # A fill waits for the unlinks of the entries evicted to make its room, and
    # cancelling that wait (a gather) cancels them: an unlink still queued for
    # a thread never ran, and the evicted file stayed on disk, counted nowhere.
    # One busy worker thread keeps the unlink queued.
    disk = CacheDir(tmp_path / "cache", "origin")
    disk.prepare()
    budget = DiskBudget(MiB, 0, disk.free_bytes)
    index = EntryIndex(CacheConfig(), disk, budget, ManualClock())
    old = Backend(random_bytes(MiB, 14))
    old_info = make_fill(tmp_path, old).info
    (tmp_path / "old.tmp").write_bytes(old.body)
    evicted = disk.commit(old_info, tmp_path / "old.tmp", [], 0.0)
    index.add(Entry(old_info, evicted, 0.0))
    busy = hold_the_one_worker()

    unlinks = index.make_room(MiB)
    assert unlinks is not None and len(unlinks) == 1
    backend = Backend(random_bytes(MiB, 15))
    room = asyncio.gather(*unlinks, return_exceptions=True)
    info = make_fill(tmp_path, backend).info
    fill = Fill(info, backend, tmp_path / "fill.tmp", room)  # type: ignore[arg-type]
    backend.release()
    task = asyncio.create_task(fill.run(backend.chunks()))
    await wait_until(lambda: fill.filled == MiB, "every byte in, the fill waiting for its room")
    task.cancel()
    # Where the cancel drops the unlink, the fill ends at once; else it waits
    # for its room, which the busy thread holds up until it is let go.
    await asyncio.wait([task], timeout=0.5)
    busy.set()
    await asyncio.gather(task, return_exceptions=True)
    await index.close()

    assert not evicted.exists()
    assert budget.retired == 0
