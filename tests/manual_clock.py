"""A ``vidproxy.cache.clock.Clock`` that moves only when a test says so.

Hand it to the app (``create_app(config, clock=...)``, or the ``clock``
argument of ``start_vidproxy`` and ``CacheRig.start``), then ``advance`` it:
every timer that falls due runs at once, in order, before ``advance`` returns,
so a test of idle expiry or revalidation never sleeps and has no margins.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(order=True)
class ManualTimer:
    when: float
    order: int  # timers due at the same moment run in the order they were set
    callback: Callable[[], None] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    def __init__(self) -> None:
        # Real readings to start from: files the cache writes carry plausible mtimes.
        self._wall_start = time.time()
        self._monotonic_start = time.monotonic()
        self._elapsed = 0.0
        self._due: list[ManualTimer] = []
        self._order = itertools.count()

    def now(self) -> float:
        return self._wall_start + self._elapsed

    def monotonic(self) -> float:
        return self._monotonic_start + self._elapsed

    def call_later(self, delay: float, callback: Callable[[], None]) -> ManualTimer:
        timer = ManualTimer(self._elapsed + max(0.0, delay), next(self._order), callback)
        heapq.heappush(self._due, timer)
        return timer

    def advance(self, seconds: float) -> None:
        """Move forward ``seconds``, running each timer due by then at its own moment."""
        target = self._elapsed + seconds
        while self._due and self._due[0].when <= target:
            timer = heapq.heappop(self._due)
            if not timer.cancelled:
                self._elapsed = max(self._elapsed, timer.when)
                timer.callback()
        self._elapsed = target

    @property
    def pending(self) -> int:
        """Timers set and neither run nor cancelled."""
        return sum(not timer.cancelled for timer in self._due)
