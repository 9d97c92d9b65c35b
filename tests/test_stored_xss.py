"""The stored-XSS exploit, in Debian's Chromium: a client holding only a signed PUT
URL stores a document whose script steals the page's token and writes with it;
the operator, logged in to the page, opens the object's URL in the same tab.
No stored byte may run script on the service's origin: the object downloads
(or, for media, plays) and nothing is written."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient
from chromium import launched_chromium

from vidproxy.config import Config

Client = TestClient[Any, Any]
Wait = Callable[..., Any]

WRITE_TOKEN = "operator-write-token-3c9e"
WRITER = {"Authorization": f"Bearer {WRITE_TOKEN}"}
AUTH = {"write_tokens": [WRITE_TOKEN], "signing_key": "xss-signing-key-81f0"}
STOLEN_KEY = "stolen.txt"
STEP_TIMEOUT_MS = 15_000

# Synchronous XHRs: whatever the script does is done before the document's load
# event, so once the navigation is over there is nothing left to wait for.
STEAL = f"""
var token = sessionStorage.getItem('vidproxy.token') || localStorage.getItem('vidproxy.token');
var xhr = new XMLHttpRequest();
xhr.open('PUT', '/videos/{STOLEN_KEY}', false);
xhr.setRequestHeader('Authorization', 'Bearer ' + token);
xhr.send('stolen ' + token);
"""
HTML = f"<!doctype html><title>clip</title><script>{STEAL}</script>".encode()
SVG = f'<svg xmlns="http://www.w3.org/2000/svg"><script>{STEAL}</script></svg>'.encode()
XHTML = (
    f'<html xmlns="http://www.w3.org/1999/xhtml"><body><script>{STEAL}</script></body></html>'
).encode()


@dataclass(frozen=True)
class Stored:
    key: str
    content_type: str | None  # None: the uploader sends none, vidproxy guesses from the key
    body: bytes
    download_as: str | None  # the file name Chromium saves it under; None: shown inline


EXPLOITS = [
    Stored("clip.mp4", "text/html", HTML, "clip.mp4"),  # the reported exploit
    Stored("page.html", None, HTML, "page.html"),  # guessed text/html
    Stored("pic.svg", None, SVG, "pic.svg"),  # guessed image/svg+xml
    Stored("doc.xhtml", "application/xhtml+xml", XHTML, "doc.xhtml"),
    Stored("démo/prêt ✓.html", None, HTML, "prêt ✓.html"),  # filename* for the exact name
    Stored("fake.mp4", "video/mp4", HTML, None),  # inline, and nosniff keeps it a video
]


@pytest.fixture
async def site(make_config: Callable[..., Config], start_vidproxy: Callable[..., Any]) -> Client:
    """Writes need the token (or a signed URL); reads are public, as on a video site."""
    client: Client = await start_vidproxy(make_config("fs", auth=AUTH))
    return client


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with launched_chromium() as browser:
        yield browser


async def store_with_a_signed_put_url(site: Client, stored: Stored) -> None:
    """The attacker's part: a PUT URL for one key, and no token."""
    signed = await site.post("/sign", json={"key": stored.key, "method": "PUT"}, headers=WRITER)
    assert signed.status == 200, await signed.text()
    headers = {"Content-Type": stored.content_type} if stored.content_type else {}
    url = (await signed.json())["url"]
    response = await site.put(
        url, data=stored.body, headers=headers, skip_auto_headers={"Content-Type"}
    )
    assert response.status == 201, await response.text()


async def operator_tab(site: Client, context: Any) -> Any:
    """The page, with the write token saved the way the page saves it."""
    tab = await context.new_page()
    await tab.goto(str(site.make_url("/")))
    await tab.fill("#token", WRITE_TOKEN)
    await tab.click("#token-form button[type=submit]")
    await tab.wait_for_function(
        "() => document.getElementById('page-info').textContent.startsWith('Page 1')",
        timeout=STEP_TIMEOUT_MS,
    )
    token = await tab.evaluate("() => sessionStorage.getItem('vidproxy.token')")
    assert token == WRITE_TOKEN, "the exploit must have a token to steal"
    return tab


@pytest.mark.parametrize("stored", EXPLOITS, ids=lambda s: s.key)
async def test_a_stored_document_runs_no_script_on_the_origin(
    site: Client, browser: Any, stored: Stored, wait_until: Wait
) -> None:
    await store_with_a_signed_put_url(site, stored)
    context = await browser.new_context(accept_downloads=True)
    try:
        tab = await operator_tab(site, context)
        scripted: list[str] = []
        tab.on(
            "request",
            lambda r: scripted.append(r.url) if r.resource_type in ("xhr", "fetch") else None,
        )
        downloads: list[Any] = []
        tab.on("download", lambda download: downloads.append(download))
        object_url = str(site.make_url("/videos/" + quote(stored.key)))
        with suppress(Exception):  # a download aborts the navigation: "Download is starting"
            await tab.goto(object_url)

        stolen = await site.get(f"/videos/{STOLEN_KEY}")
        assert stolen.status == 404, f"the script ran and wrote: {await stolen.read()!r}"
        assert scripted == [], "the stored document's script sent requests"
        if stored.download_as is None:
            assert downloads == []
            return
        await wait_until(lambda: _any(downloads), "Chromium saves the object as a download")
        assert downloads[0].suggested_filename == stored.download_as
        saved = Path(await downloads[0].path())
        assert await asyncio.to_thread(saved.read_bytes) == stored.body
    finally:
        await context.close()


async def _any(items: list[Any]) -> bool:
    return bool(items)
