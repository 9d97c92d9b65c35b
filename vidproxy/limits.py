"""Admission limits that keep memory bounded under a flood of uploads."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .errors import UpstreamUnavailable
from .units import MiB


class UploadsBusy(UpstreamUnavailable):
    code = "too_many_uploads"


class UploadSlots:
    """At most ``limit`` uploads at once; past it, 503 with Retry-After."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0

    def check_free(self) -> None:
        if self.in_use >= self.limit:
            raise UploadsBusy(f"{self.limit} uploads are already in progress; retry shortly")

    @contextmanager
    def hold(self) -> Iterator[None]:
        self.check_free()
        self.in_use += 1
        try:
            yield
        finally:
            self.in_use -= 1


class InFlight:
    """Counts requests being handled, so shutdown can wait for them and then
    cancel what is left. Called from the handler's own task."""

    def __init__(self) -> None:
        self.count = 0
        self.draining = False  # set at SIGTERM
        self._tasks: set[asyncio.Task[Any]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        if (task := asyncio.current_task()) is not None:
            self._tasks.add(task)
        self._idle.clear()

    def leave(self) -> None:
        self._tasks.discard(asyncio.current_task())  # type: ignore[arg-type]
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    def cancel_all(self) -> None:
        """Cancel every handler still running: uploads abort, temp files go."""
        for task in self._tasks:
            task.cancel()

    async def wait_idle(self) -> None:
        await self._idle.wait()


# glibc raises its mmap threshold to the largest block freed so far, so after
# the first multipart part every part buffer comes from the heap, which
# fragments and does not shrink: pinning the threshold keeps part-sized
# buffers in mmap, returned to the system as soon as they are freed. It stays
# above asyncio's 256 KiB socket reads: each of those mmapped and unmapped
# again cost an upload ~0.6 s of CPU per GiB.
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 1 * MiB


def pin_malloc_mmap_threshold() -> bool:
    """Best effort; False where the C library is not glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False
