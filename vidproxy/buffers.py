"""Buffers whose memory is taken as bytes are written into them, not when made."""

from __future__ import annotations

import mmap


def lazy_buffer(size: int) -> mmap.mmap:
    """``size`` (> 0) writable bytes in an anonymous mapping. The kernel supplies
    each page at its first write, so a part or write buffer holds as much memory
    as has arrived in it (a trickling upload pins what it sent, not a whole 8 MiB
    part) while bytes are still copied into it once, straight from the socket's
    piece. A ``bytearray`` of the same size is zero-filled, every page touched."""
    # Private: Python's default for -1 is MAP_SHARED, memory counted as shmem.
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
