"""A one-line progress bar on stderr, redrawn in place while a transfer runs:

    clip.webm  [########............]  42%  10.5/25.0 MB  11.3 MB/s  ETA 0:01

Drawn only when asked (the commands ask when stderr is a terminal), so a
script's stderr carries errors, not carriage returns.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from typing import TextIO

REDRAW_SECONDS = 0.1  # at most ten redraws a second
LABEL_CHARS = 24
MIN_BAR_CHARS = 10
MB = 1000**2


def format_eta(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def render(label: str, done: int, total: int | None, rate: float, width: int) -> str:
    """The bar line for ``done`` of ``total`` bytes (``None``: unknown) at ``rate`` bytes/s."""
    if len(label) > LABEL_CHARS:
        label = "..." + label[-(LABEL_CHARS - 3) :]
    speed = f"{rate / MB:.1f} MB/s"
    if not total:
        return f"{label}  {done / MB:.1f} MB  {speed}"
    fraction = min(done / total, 1.0)
    eta = format_eta((total - done) / rate) if rate else "--:--"
    tail = f"{fraction:4.0%}  {done / MB:.1f}/{total / MB:.1f} MB  {speed}  ETA {eta}"
    room = width - len(label) - len(tail) - 6
    if room < MIN_BAR_CHARS:
        return f"{label}  {tail}"
    filled = int(room * fraction)
    return f"{label}  [{'#' * filled}{'.' * (room - filled)}]  {tail}"


class Progress:
    def __init__(
        self,
        label: str,
        total: int | None,
        stream: TextIO,
        enabled: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self._offset = 0  # bytes done before this run (a resumed download)
        self._stream = stream
        self._enabled = enabled
        self._clock = clock
        self._started = clock()
        self._drawn_at = float("-inf")
        self._line_open = False  # drawn, and no newline after it yet

    def start_at(self, offset: int) -> None:
        """A resumed transfer: count ``offset`` bytes as done, not as speed."""
        self.done = offset
        self._offset = offset

    def advance(self, n: int) -> None:
        self.done += n
        now = self._clock()
        if now - self._drawn_at >= REDRAW_SECONDS:
            self._drawn_at = now
            self._draw(now)

    def finish(self) -> None:
        if self._enabled:
            self._draw(self._clock())
            self.end_line()

    def end_line(self) -> None:
        """End the bar's line, so what is written next starts on its own."""
        if self._line_open:
            self._stream.write("\n")
            self._stream.flush()
            self._line_open = False

    def _draw(self, now: float) -> None:
        if not self._enabled:
            return
        elapsed = now - self._started
        rate = (self.done - self._offset) / elapsed if elapsed > 0 else 0.0
        width = shutil.get_terminal_size().columns
        line = render(self.label, self.done, self.total, rate, width - 1)
        self._stream.write("\r" + line.ljust(width - 1))
        self._stream.flush()
        self._line_open = True
