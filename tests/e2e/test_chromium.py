"""Debian's Chromium, headless and driven by Playwright, plays a <video> from vidproxy
and seeks in it: once cold (the S3 cache has not seen the object), once warm."""

from __future__ import annotations

import re
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .support import CLIP_SECONDS, Vidproxy, poll

pytestmark = pytest.mark.e2e

SEEK_TO = 40.0  # seconds
SEEK_TOLERANCE = 1.0  # seconds: currentTime lands on the frame nearest the target
STEP_TIMEOUT_MS = 15_000  # for each of: start playing, finish seeking, play on
CACHE_TIMEOUT = 10.0  # seconds for a full GET to leave the object in vidproxy's cache


@dataclass(frozen=True)
class MediaResponse:
    status: int
    range: str | None  # the Range header Chromium sent
    x_cache: str | None


@dataclass(frozen=True)
class Playback:
    duration: float
    seeked_at: float
    error: int | None
    responses: list[MediaResponse]


def play_and_seek(browser: Any, url: str) -> Playback:
    """Play ``url`` muted in a fresh browser context (so no browser cache), seek to
    ``SEEK_TO``, and wait for ``seeked`` and for playback to go on from there."""
    context = browser.new_context()
    try:
        page = context.new_page()
        responses: list[MediaResponse] = []

        def record(response: Any) -> None:
            if response.url == url:
                request_range = response.request.headers.get("range")
                responses.append(
                    MediaResponse(response.status, request_range, response.headers.get("x-cache"))
                )

        page.on("response", record)
        page.set_content(f'<video id="v" muted autoplay preload="auto" src="{url}"></video>')
        video = "document.getElementById('v')"
        page.wait_for_function(f"() => {video}.currentTime > 0.5", timeout=STEP_TIMEOUT_MS)
        page.evaluate(
            f"""() => {{
                const v = {video};
                window.seekedAt = null;
                v.addEventListener('seeked', () => {{ window.seekedAt = v.currentTime; }},
                                   {{once: true}});
                v.currentTime = {SEEK_TO};
            }}"""
        )
        page.wait_for_function("() => window.seekedAt !== null", timeout=STEP_TIMEOUT_MS)
        page.wait_for_function(
            f"() => {video}.currentTime > window.seekedAt + 0.5", timeout=STEP_TIMEOUT_MS
        )
        state = page.evaluate(
            f"() => ({{duration: {video}.duration, seekedAt: window.seekedAt,"
            f" error: {video}.error && {video}.error.code}})"
        )
        return Playback(state["duration"], state["seekedAt"], state["error"], responses)
    finally:
        context.close()


def upload(vidproxy: Vidproxy, key: str, path: Path) -> None:
    mark = vidproxy.log_mark()
    request = urllib.request.Request(vidproxy.url(key), data=path.read_bytes(), method="PUT")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 201
    vidproxy.wait_for_upload(mark, key)


def x_cache(url: str, whole: bool = False) -> str | None:
    """X-Cache of a GET: the whole body, or one byte of it."""
    headers = {} if whole else {"Range": "bytes=0-0"}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as r:
        r.read()
        return r.headers.get("X-Cache")


def _range_start(header: str | None) -> int | None:
    match = re.fullmatch(r"bytes=(\d+)-\d*", header or "")
    return int(match[1]) if match else None


def check_playback(vidproxy: Vidproxy, key: str, mark: int, playback: Playback) -> None:
    assert playback.error is None
    assert abs(playback.duration - CLIP_SECONDS) < SEEK_TOLERANCE
    assert abs(playback.seeked_at - SEEK_TO) < SEEK_TOLERANCE
    assert playback.responses, "Chromium's requests for the video were not seen"
    assert {r.status for r in playback.responses} == {206}
    starts = [_range_start(r.range) for r in playback.responses]
    assert None not in starts, f"every request should carry a Range: {playback.responses}"
    assert max(s or 0 for s in starts) > 0, "seeking should have asked for a later range"
    lines = vidproxy.wait_for_access(mark, key, lambda ls: len(ls) > 0, "Chromium's GETs")
    assert {(line.method, line.status) for line in lines} == {("GET", 206)}


def test_plays_and_seeks_cold(vidproxy: Vidproxy, webm_clip: Path, browser: Any, key: str) -> None:
    key += ".webm"
    upload(vidproxy, key, webm_clip)
    mark = vidproxy.log_mark()

    playback = play_and_seek(browser, vidproxy.url(key))

    check_playback(vidproxy, key, mark, playback)
    if vidproxy.backend != "fs":
        assert playback.responses[0].x_cache == "MISS"


def test_plays_and_seeks_warm(vidproxy: Vidproxy, webm_clip: Path, browser: Any, key: str) -> None:
    key += ".webm"
    upload(vidproxy, key, webm_clip)
    if vidproxy.backend != "fs":
        assert x_cache(vidproxy.url(key), whole=True) == "MISS"
        poll(lambda: x_cache(vidproxy.url(key)) == "HIT", "the object cached", CACHE_TIMEOUT)
    mark = vidproxy.log_mark()

    playback = play_and_seek(browser, vidproxy.url(key))

    check_playback(vidproxy, key, mark, playback)
    if vidproxy.backend != "fs":
        assert {r.x_cache for r in playback.responses} == {"HIT"}
