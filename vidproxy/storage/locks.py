"""One ``asyncio.Lock`` per key, kept only while someone holds or awaits it."""

from __future__ import annotations

import asyncio
import weakref


class KeyLocks:
    """Locks by key. A lock lives while a holder or a waiter refers to it, so the
    table never outgrows the keys in use."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def __call__(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock
