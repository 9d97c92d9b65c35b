"""The cache's sense of time: what time it is, and a callback later.

Entries expire after ``cache.idle_ttl`` without a hit, each by its own timer
(``loop.call_later``, re-armed on every hit), and are revalidated after
``cache.revalidate_after``. Both read a ``Clock``, so a test can hand the cache
one it moves forward itself instead of sleeping; the app uses ``SystemClock``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol


class Timer(Protocol):
    """A callback waiting on a clock (``asyncio.TimerHandle`` is one)."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock seconds since the epoch: what the data files' mtimes record."""
        ...

    def monotonic(self) -> float:
        """Seconds that only ever go forward: for how long ago something was."""
        ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        """Call ``callback`` on the event loop ``delay`` seconds from now."""
        ...


class SystemClock:
    """The machine's clocks; timers on the running event loop."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_later(delay, callback)
