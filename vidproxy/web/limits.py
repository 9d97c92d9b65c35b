"""Admission limits that keep memory bounded under a flood of uploads."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from ..errors import UploadsBusy


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


# Descriptors left for what is not a client connection: stdio, the loop's epoll and
# self-pipe, the listening socket, logs, threads' files, and a margin.
RESERVED_DESCRIPTORS = 64
# A client connection may hold a second descriptor: the data or cache file it is
# served from, or the temp file its upload goes into.
DESCRIPTORS_PER_CONNECTION = 2
MIN_CONNECTIONS = 8
# What Linux allows at most (fs.nr_open); stands in for an unlimited RLIMIT_NOFILE.
MAX_DESCRIPTORS = 1 << 20


def connection_limit(open_files: int, s3_pool: int) -> int:
    """How many client connections fit ``open_files`` descriptors (the soft
    RLIMIT_NOFILE, negative if unlimited), leaving room for the S3 pool and files."""
    usable = (MAX_DESCRIPTORS if open_files < 0 else open_files) - RESERVED_DESCRIPTORS - s3_pool
    return max(MIN_CONNECTIONS, usable // DESCRIPTORS_PER_CONNECTION)


class Evictable(Protocol):
    def evict(self) -> None: ...


class ConnectionSlots:
    """At most ``limit`` client connections. Past it, a new connection takes the
    place of the one that has waited longest for a request head (stalled halfway or
    idle between requests), so a probe or a real client still gets in while stalled
    ones hold the rest; only when every connection is busy with a request is the
    new one refused. Called from the event loop only."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.evicted = 0
        self._open: set[Evictable] = set()
        # Insertion order is the order in which they began to wait: oldest first.
        self._waiting: dict[Evictable, None] = {}

    @property
    def count(self) -> int:
        return len(self._open)

    def admit(self, connection: Evictable) -> bool:
        """Count a new connection in, waiting for its first head; False: no room."""
        if len(self._open) >= self.limit and not self.evict_oldest():
            return False
        self._open.add(connection)
        self._waiting[connection] = None
        return True

    def evict_oldest(self) -> bool:
        """Close the connection that has waited longest for a head, if there is one."""
        oldest = next(iter(self._waiting), None)
        if oldest is None:
            return False
        self.closed(oldest)
        self.evicted += 1
        oldest.evict()
        return True

    def waiting(self, connection: Evictable) -> None:
        """Its answer is out; it now waits for its next head (the newest to wait)."""
        if connection in self._open:
            self._waiting.pop(connection, None)
            self._waiting[connection] = None

    def busy(self, connection: Evictable) -> None:
        """A head arrived: the connection is handling a request, not to be evicted."""
        self._waiting.pop(connection, None)

    def is_waiting(self, connection: Evictable) -> bool:
        return connection in self._waiting

    def closed(self, connection: Evictable) -> None:
        self._open.discard(connection)
        self._waiting.pop(connection, None)


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
        self._tasks.discard(asyncio.current_task())
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    def cancel_all(self) -> None:
        """Cancel every handler still running: uploads abort, temp files go."""
        for task in self._tasks:
            task.cancel()

    async def wait_idle(self) -> None:
        await self._idle.wait()
