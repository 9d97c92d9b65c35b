"""``finish``: work awaited to its end through any number of cancels."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from vidproxy.tasks import finish


async def _cancelled_twice(
    task: asyncio.Task[Any], wait_until: Any, started: threading.Event
) -> None:
    await wait_until(started.is_set, "the thread running")
    task.cancel()
    await asyncio.sleep(0)  # the first cancel is delivered; the second lands in finish's wait
    task.cancel()


async def test_a_thread_cancelled_twice_is_awaited_to_its_end(wait_until: Any) -> None:
    started, go, done = threading.Event(), threading.Event(), threading.Event()

    def work() -> str:
        started.set()
        go.wait(10)
        done.set()
        return "written"

    task = asyncio.create_task(finish(asyncio.to_thread(work)))
    await _cancelled_twice(task, wait_until, started)
    await asyncio.wait([task], timeout=0.3)
    returned_early = task.done()
    go.set()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert not returned_early
    assert done.is_set()


async def test_the_result_a_cancel_leaves_behind_goes_to_if_cancelled(wait_until: Any) -> None:
    started, go = threading.Event(), threading.Event()
    left: list[str] = []

    def work() -> str:
        started.set()
        go.wait(10)
        return "an open file"

    task = asyncio.create_task(finish(asyncio.to_thread(work), if_cancelled=left.append))
    await _cancelled_twice(task, wait_until, started)
    go.set()

    with pytest.raises(asyncio.CancelledError):
        await task
    assert left == ["an open file"]


async def test_an_error_of_the_work_after_a_cancel_is_the_cancels_cause(wait_until: Any) -> None:
    # Not lost (asyncio would log it as never retrieved), nor raised instead of the cancel.
    started, go = threading.Event(), threading.Event()

    def work() -> str:
        started.set()
        go.wait(10)
        raise OSError("no space left")

    task = asyncio.create_task(finish(asyncio.to_thread(work), if_cancelled=pytest.fail))
    await _cancelled_twice(task, wait_until, started)
    go.set()

    with pytest.raises(asyncio.CancelledError) as raised:
        await task
    assert isinstance(raised.value.__cause__, OSError)


async def test_without_a_cancel_it_returns_the_result_or_raises_the_error() -> None:
    def fails() -> None:
        raise OSError("disk full")

    left: list[str] = []
    assert await finish(asyncio.to_thread(str.upper, "ok"), if_cancelled=left.append) == "OK"
    with pytest.raises(OSError, match="disk full"):
        await finish(asyncio.to_thread(fails))
    assert left == []
