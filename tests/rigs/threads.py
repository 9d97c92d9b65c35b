"""The event loop's worker threads, cut to one, so a test decides when a
``to_thread`` job runs: it stays queued while the one worker is held."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

HOLD_SECONDS = 30.0  # the worker goes back to work by then, whatever the test does


def one_worker_thread() -> None:
    """From now on the running loop's ``to_thread`` jobs run one at a time, in order."""
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=1))


def hold_the_one_worker() -> threading.Event:
    """One worker thread, held busy until the returned event is set."""
    one_worker_thread()
    release = threading.Event()
    asyncio.get_running_loop().run_in_executor(None, release.wait, HOLD_SECONDS)
    return release
