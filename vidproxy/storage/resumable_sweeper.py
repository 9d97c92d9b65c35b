"""Drop tus uploads past their expiry: unfinished ones (parts aborted; tail,
staged parts and record removed) and the records finished ones keep for late
HEADs.

Every ``uploads.sweep_every`` seconds, so an abandoned upload is gone within
``expire_after`` plus one interval. A live upload is never dropped: each PATCH
pushes its expiry back as its parts land, and an upload this process is writing
is skipped whatever its record says. Only the records idle for ``expire_after``
are read (the listing's dates tell which): a bucket of many live uploads costs
a sweep one listing, not one read per upload.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ..errors import NotFound
from .base import ResumableStore
from .sweeper import repeat_forever

log = logging.getLogger(__name__)


async def sweep_expired(
    store: ResumableStore,
    expire_after: float,
    busy: Callable[[str], bool],
    on_expired: Callable[[], None],
) -> int:
    dropped = 0
    async for record in store.records(idle_for=expire_after):
        if busy(record.id) or time.time() < record.expires:
            continue
        try:
            await store.terminate(record)
        except NotFound:
            continue  # another replica swept it first
        if not record.completed:
            on_expired()
            dropped += 1
    if dropped:
        log.info("dropped %d expired tus upload(s)", dropped)
    return dropped


async def sweep_expired_forever(
    store: ResumableStore,
    expire_after: float,
    interval: float,
    busy: Callable[[str], bool],
    on_expired: Callable[[], None],
) -> None:
    await repeat_forever(
        lambda: sweep_expired(store, expire_after, busy, on_expired),
        interval,
        "expired upload sweep",
    )
