"""How many bytes the cache has on its disk, or has promised to put there.

Everything counts until its bytes are gone from the disk, not merely from the
index: an entry dropped while a reader still sends it (from its data file, or
from the fill's descriptor, which outlives the rename) and an entry whose
unlink has not finished stay counted as ``retired``; a fill counts at its full
size from the moment it is allowed to start until its temp file is kept or
removed. So ``cache.max_bytes`` bounds what is really on disk, and the free
space a fill may use is what the filesystem reports minus what running fills
have yet to write.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar


class Sized(Protocol):
    """An entry that may be evicted: its size, and whether a reader holds it."""

    @property
    def size(self) -> int: ...

    @property
    def idle(self) -> bool: ...


E = TypeVar("E", bound=Sized)


class Reserved(Protocol):
    """A running fill: the bytes it takes, and those it has written so far."""

    @property
    def size(self) -> int: ...

    @property
    def written(self) -> int: ...


@dataclass
class DiskBudget:
    max_bytes: int
    min_free_bytes: int
    free_bytes: Callable[[], int]  # the filesystem's free space (statvfs)
    indexed: int = 0  # bytes of entries in the index
    retired: int = 0  # bytes of dropped entries still on disk
    fills: set[Reserved] = field(default_factory=set)

    def room(self) -> int:
        """Bytes a new fill could take now without breaking either bound."""
        reserved = sum(fill.size for fill in self.fills)
        to_write = sum(fill.size - fill.written for fill in self.fills)
        under_bound = self.max_bytes - (self.indexed + self.retired + reserved)
        # statvfs reads the filesystem's counters and never waits on the disk;
        # a thread hop here cost a seeking client ~10 ms on a busy loop.
        above_floor = self.free_bytes() - to_write - self.min_free_bytes
        return min(under_bound, above_floor)

    def victims(self, size: int, lru: Iterable[E]) -> list[E] | None:
        """The least recently used idle entries whose eviction makes room for
        ``size`` bytes (none if there is room), or None if no choice can:
        then nothing should be evicted, and the object is not cached."""
        needed = size - self.room()
        chosen: list[E] = []
        for entry in lru:
            if needed <= 0:
                break
            if entry.idle:  # a read entry's bytes stay on disk however it is dropped
                chosen.append(entry)
                needed -= entry.size
        return chosen if needed <= 0 else None
