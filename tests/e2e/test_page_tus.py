"""The page's uploads over tus in headless Chromium, vidproxy on fs, moto and
rclone behind the cutting relay: a connection dropped mid-PATCH is resumed by
tus-js-client on its own, and an upload interrupted by a page reload resumes
when the same file is chosen again (tus-js-client's URL store in
localStorage). The stored bytes are compared with the file's."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .cut_relay import CuttingRelay, relay_to
from .support import Vidproxy

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
# Cut or stalled here: past the first 5 MiB part, inside the one PATCH the page
# sends for a file under its 64 MiB PATCH size.
CUT_AT = 8 * MiB + 4321
STEP_TIMEOUT_MS = 60_000
# Stored: "done", or "warn" for bytes that are no playable video (random ones).
DONE = "() => document.querySelector('#uploads .upload.done, #uploads .upload.warn') !== null"


@pytest.fixture
def relay(vidproxy: Vidproxy) -> Iterator[CuttingRelay]:
    with relay_to(vidproxy.base_url) as relay:
        yield relay


@pytest.fixture
def tab(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    try:
        yield context.new_page()
    finally:
        context.close()


class TusRequests:
    """The tus requests the page sent: method and Upload-Offset of each."""

    def __init__(self, tab: Any) -> None:
        self.seen: list[tuple[str, str | None]] = []
        tab.on("request", self._record)

    def _record(self, request: Any) -> None:
        if "/uploads" in request.url:
            self.seen.append((request.method, request.headers.get("upload-offset")))

    def patch_offsets(self) -> list[int]:
        return [int(offset) for method, offset in self.seen if method == "PATCH" and offset]

    def count(self, method: str) -> int:
        return sum(1 for seen, _ in self.seen if seen == method)


def wait_until_stored(tab: Any, requests: TusRequests) -> None:
    """The upload's row turns done; on a timeout, say what the row and the requests were."""
    try:
        tab.wait_for_function(DONE, timeout=STEP_TIMEOUT_MS)
    except Exception:
        row = tab.inner_text("#uploads") if tab.locator("#uploads").count() else ""
        pytest.fail(f"the upload did not finish: {row!r}; tus requests {requests.seen}")


def choose(tab: Any, path: Path, prefix: str) -> None:
    tab.fill("#prefix", prefix)
    tab.set_input_files("#file", str(path))


def stored_bytes(vidproxy: Vidproxy, key: str) -> bytes:
    with urllib.request.urlopen(vidproxy.url(key), timeout=30) as response:
        return bytes(response.read())


def test_a_dropped_connection_is_resumed_by_the_page(
    vidproxy: Vidproxy, relay: CuttingRelay, tab: Any, big_file: Path, key: str
) -> None:
    requests = TusRequests(tab)
    tab.goto(relay.url + "/")
    relay.cut_after(CUT_AT)
    choose(tab, big_file, key + "/")

    wait_until_stored(tab, requests)
    assert relay.cuts == 1
    assert requests.count("POST") == 1  # one upload, resumed, not begun again
    assert requests.count("HEAD") >= 1  # asked where to go on
    assert max(requests.patch_offsets()) > 0  # and went on from there
    assert stored_bytes(vidproxy, f"{key}/{big_file.name}") == big_file.read_bytes()


def test_an_upload_cut_by_a_reload_resumes_when_the_file_is_chosen_again(
    vidproxy: Vidproxy, relay: CuttingRelay, tab: Any, big_file: Path, key: str
) -> None:
    requests = TusRequests(tab)
    tab.goto(relay.url + "/")
    relay.hold_after(CUT_AT)
    choose(tab, big_file, key + "/")
    relay.wait_for_hold()
    tab.reload()  # the upload's request dies with the page
    relay.cut_held()
    assert requests.count("POST") == 1

    choose(tab, big_file, key + "/")
    wait_until_stored(tab, requests)
    # Found in localStorage: no second upload.
    assert requests.count("POST") == 1, requests.seen
    resumed = requests.patch_offsets()[-1]
    assert 0 < resumed <= CUT_AT + 64 * 1024  # the hold lets one relay chunk past it
    assert stored_bytes(vidproxy, f"{key}/{big_file.name}") == big_file.read_bytes()
    # Done: the URL store forgets it, so the same file chosen again is a new upload.
    assert (
        tab.evaluate("() => Object.keys(localStorage).filter((k) => k.startsWith('tus::'))") == []
    )
