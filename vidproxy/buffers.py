"""Memory for bytes in flight: buffers that take memory only as bytes are written
into them, and the C library's threshold for returning freed blocks."""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap

from .units import MiB


def lazy_buffer(size: int) -> mmap.mmap:
    """``size`` (> 0) writable bytes in an anonymous mapping. The kernel supplies
    each page at its first write, so a part or write buffer holds as much memory
    as has arrived in it (a trickling upload pins what it sent, not a whole 8 MiB
    part) while bytes are still copied into it once, straight from the socket's
    piece. A ``bytearray`` of the same size is zero-filled, every page touched."""
    # Private: Python's default for -1 is MAP_SHARED, memory counted as shmem.
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)


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
