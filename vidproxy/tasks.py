"""Awaiting work that a cancel must not cut short."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


async def finish(aw: Awaitable[T], *, if_cancelled: Callable[[T], object] | None = None) -> T:
    """Await ``aw`` to its end however often we are cancelled meanwhile, then
    raise the cancel (``if_cancelled`` gets the result we will not return).

    For a thread that creates, writes or removes a file, and for cleanup: a
    thread cannot be stopped, so a cancel that returned at once would leave it
    running behind the cleanup, which then misses what it does (a temp file
    created after its unlink). ``asyncio.shield`` protects against one cancel
    only: a second one (the last reader leaving, then shutdown) lands in the
    cleanup's own await."""
    task = asyncio.ensure_future(aw)
    cancelled: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.wait([task])  # never cancels the task
        except asyncio.CancelledError as exc:
            cancelled = exc
    if cancelled is None:
        return task.result()
    if task.cancelled():
        raise cancelled
    error = task.exception()
    if error is None and if_cancelled is not None:
        if_cancelled(task.result())
    raise cancelled from error  # the work's own error, if any, stays in the traceback


async def finish_in_thread(func: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``asyncio.to_thread``, but a cancel waits for the thread (see ``finish``)."""
    return await finish(asyncio.to_thread(func, *args, **kwargs))
