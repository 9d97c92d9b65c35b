"""Bounded polls: call a condition until it holds, fail the test after a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

# Upper bound for a poll that waits on something vidproxy finishes after it
# answered (or after the client left): an abort reaching S3, a temp file removed.
POLL_TIMEOUT = 5.0
POLL_INTERVAL = 0.05


def poll(condition: Callable[[], bool], what: str, timeout: float = POLL_TIMEOUT) -> None:
    """Call ``condition`` until it is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s: {what}")
        time.sleep(POLL_INTERVAL)


async def apoll(condition: Callable[[], Any], what: str, within: float = POLL_TIMEOUT) -> None:
    """Await ``condition`` (sync or async) until it is true; fail after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"not within {within}s: {what}")
        await asyncio.sleep(POLL_INTERVAL)
