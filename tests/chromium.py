"""Debian's Chromium as the browser tests launch it (Playwright, no browser download)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
# As root on this kind of machine: no sandbox, no GPU, and no calls home (the
# network is closed, and Chromium would retry them all through the test).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
LAUNCH_TIMEOUT_MS = 30_000


def require_chromium() -> str:
    if not Path(CHROMIUM).is_file():
        pytest.skip("chromium is not installed")
    return CHROMIUM


@asynccontextmanager
async def launched_chromium() -> AsyncIterator[Any]:
    """Headless Chromium through Playwright's async API; skips the test without it."""
    executable = require_chromium()
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.fail("the playwright package is not installed (pip install playwright)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS, timeout=LAUNCH_TIMEOUT_MS
        )
        try:
            yield browser
        finally:
            await browser.close()
