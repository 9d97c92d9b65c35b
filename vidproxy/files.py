"""Durable local files: blocking helpers (run them in a thread) and a chunked reader."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from .conditions import ByteRange
from .units import MiB

READ_CHUNK = 1 * MiB


def flush_and_sync(f: Any) -> None:
    f.flush()
    os.fsync(f.fileno())


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so a crash leaves the old or the new file, whole."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        flush_and_sync(f)
    os.replace(tmp, path)


def sync_dir(path: Path) -> None:
    """Make renames and unlinks in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def read_file(path: Path, byte_range: ByteRange) -> AsyncIterator[bytes]:
    """Yield ``byte_range`` of ``path`` without blocking the event loop."""
    with await asyncio.to_thread(open, path, "rb") as f:
        left = byte_range.length
        position = byte_range.start
        while left > 0:
            chunk = await asyncio.to_thread(os.pread, f.fileno(), min(READ_CHUNK, left), position)
            if not chunk:
                raise OSError(f"{path.name} ended {left} bytes early")
            left -= len(chunk)
            position += len(chunk)
            yield chunk
