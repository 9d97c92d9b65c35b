"""Admission limits that keep memory bounded under a flood of uploads."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from .errors import UpstreamUnavailable


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
    """Counts requests being handled, so shutdown can wait for them."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        self._idle.clear()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        await self._idle.wait()
