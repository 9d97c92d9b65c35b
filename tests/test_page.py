"""The web page at /: served with revalidation headers, and driven in Debian's
Chromium (headless, through Playwright) to upload, list, play, seek and delete."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from chromium import launched_chromium

from vidproxy.config import Config
from vidproxy.web.handlers import page

SCREENSHOT = Path(__file__).parent / "artifacts" / "page.png"
VIEWPORT = {"width": 1280, "height": 800}
CLIP_SECONDS = 10
SEEK_TO = 5.0  # seconds
SEEK_TOLERANCE = 0.5  # seconds
STEP_TIMEOUT_MS = 15_000
FFMPEG_TIMEOUT = 60.0  # seconds
# What the progress line shows mid-upload: "12.5% · 0.5 MB of 4.19 MB · 1.02 MB/s · 0:03 left".
PROGRESS_STATS = r"^\d+\.\d% · .+ of .+ · \d+\.\d\d MB/s · \d+:\d\d left$"


@pytest.fixture
async def site(
    make_config: Callable[..., Config], start_vidproxy: Callable[..., Any]
) -> TestClient[Any, Any]:
    return await start_vidproxy(make_config("fs"))


async def test_index_is_html_that_browsers_revalidate(site: TestClient[Any, Any]) -> None:
    response = await site.get("/")
    assert response.status == 200
    assert response.content_type == "text/html"
    assert response.headers["Cache-Control"] == "no-cache"
    assert "<title>vidproxy</title>" in await response.text()

    again = await site.get("/", headers={"If-None-Match": response.headers["ETag"]})
    assert again.status == 304
    assert await again.read() == b""


async def test_the_page_allows_only_its_own_script_and_style(site: TestClient[Any, Any]) -> None:
    response = await site.get("/")
    page_text = await response.read()
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in response.headers["Content-Security-Policy"].split(";")
    )
    # The hashes of exactly the script and style the page holds, computed here,
    # and of the one script it loads (tus-js-client), as served.
    inline = {}
    for tag in ("script", "style"):
        body = re.search(rb"<%b>(.*?)</%b>" % (tag.encode(), tag.encode()), page_text, re.DOTALL)
        assert body is not None
        inline[tag] = f"'sha256-{base64.b64encode(hashlib.sha256(body[1]).digest()).decode()}'"
    tus_js = await (await site.get("/tus.min.js")).read()
    loaded = f"sha384-{base64.b64encode(hashlib.sha384(tus_js).digest()).decode()}"
    assert f'<script src="tus.min.js" integrity="{loaded}"></script>'.encode() in page_text
    assert len(re.findall(rb"<script", page_text)) == 2
    assert policy["script-src"] == f"{inline['script']} '{loaded}'"
    assert policy["style-src"] == inline["style"]
    assert policy == {
        "default-src": "'none'",
        "script-src": policy["script-src"],
        "style-src": policy["style-src"],
        "connect-src": "'self'",
        "media-src": "'self'",
        "img-src": "'self'",
        "base-uri": "'none'",
        "form-action": "'none'",
        "frame-ancestors": "'none'",
    }
    assert "unsafe" not in response.headers["Content-Security-Policy"]


# ---- in the browser ----------------------------------------------------------


@pytest.fixture(scope="module")
def webm_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Ten seconds of test pattern and tone, VP9 + Opus in WebM, at a low resolution."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg is not installed")
    path = tmp_path_factory.mktemp("page") / "clip.webm"
    video = f"testsrc2=size=320x180:rate=25:duration={CLIP_SECONDS}"
    audio = f"sine=frequency=440:sample_rate=48000:duration={CLIP_SECONDS}"
    argv = [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    argv += ["-f", "lavfi", "-i", video, "-f", "lavfi", "-i", audio, "-map", "0:v", "-map", "1:a"]
    argv += ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "300k"]
    argv += ["-g", "25", "-pix_fmt", "yuv420p", "-c:a", "libopus", "-b:a", "48k", str(path)]
    subprocess.run(argv, check=True, capture_output=True, timeout=FFMPEG_TIMEOUT)
    return path


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with launched_chromium() as browser:
        yield browser


def csp_violations(tab: Any) -> list[str]:
    """Console reports of anything the page's Content-Security-Policy blocked."""
    seen: list[str] = []
    tab.on(
        "console",
        lambda message: (
            seen.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    return seen


SEEK_AND_WAIT = """(to) => new Promise((resolve, reject) => {
    const v = document.getElementById('player');
    v.addEventListener('seeked', () => resolve(v.currentTime), {once: true});
    v.addEventListener('error', () => reject(new Error('media error ' + v.error.code)),
                       {once: true});
    v.currentTime = to;
})"""


async def test_upload_play_seek_delete(
    site: TestClient[Any, Any], browser: Any, webm_clip: Path, tmp_path: Path
) -> None:
    context = await browser.new_context(viewport=VIEWPORT)
    try:
        tab = await context.new_page()
        # A token makes the page ask POST /sign for playable links, and fall
        # back to the plain URL while the server has no such endpoint.
        await tab.add_init_script("localStorage.setItem('vidproxy.token', 'page-test-token')")
        dialogs: list[str] = []

        async def accept(dialog: Any) -> None:
            dialogs.append(dialog.message)
            await dialog.accept()

        tab.on("dialog", accept)
        blocked = csp_violations(tab)
        media: list[int] = []

        def record(response: Any) -> None:
            if "/videos/clip.webm" in response.url:
                media.append(response.status)

        tab.on("response", record)
        await tab.goto(str(site.make_url("/")))

        # Two files at once: the page uploads them one after the other.
        second = tmp_path / "intro.webm"
        shutil.copyfile(webm_clip, second)
        await tab.set_input_files("#file", [str(webm_clip), str(second)])
        row = tab.locator('tr[data-key="clip.webm"]')
        await row.wait_for(timeout=STEP_TIMEOUT_MS)
        await tab.locator('tr[data-key="intro.webm"]').wait_for(timeout=STEP_TIMEOUT_MS)
        # One row per file, each green once stored.
        await tab.wait_for_function(
            "() => document.querySelectorAll('#uploads .upload.done').length === 2",
            timeout=STEP_TIMEOUT_MS,
        )
        stored = await site.get("/videos/clip.webm")
        assert await stored.read() == await asyncio.to_thread(webm_clip.read_bytes)

        await row.locator("button.play").click()
        await tab.wait_for_function(
            "() => document.getElementById('player').readyState >= 1", timeout=STEP_TIMEOUT_MS
        )
        duration = await tab.evaluate("() => document.getElementById('player').duration")
        assert abs(duration - CLIP_SECONDS) < SEEK_TOLERANCE
        seeked_at = await tab.evaluate(SEEK_AND_WAIT, SEEK_TO)
        assert abs(seeked_at - SEEK_TO) < SEEK_TOLERANCE
        assert 206 in media, f"the player should have asked for ranges: {media}"
        SCREENSHOT.parent.mkdir(exist_ok=True)
        await tab.screenshot(path=str(SCREENSHOT), full_page=True)

        await row.locator("button.delete").click()
        await row.wait_for(state="detached", timeout=STEP_TIMEOUT_MS)
        assert dialogs == ['Delete "clip.webm"? This cannot be undone.']
        assert (await site.get("/videos/clip.webm")).status == 404
        assert await tab.locator("tr[data-key]").count() == 1
        assert blocked == []  # the strict policy costs the page nothing
    finally:
        await context.close()


async def test_progress_and_cancel(
    site: TestClient[Any, Any], browser: Any, tmp_path: Path
) -> None:
    big = tmp_path / "slow.webm"
    big.write_bytes(bytes(4 * 1024 * 1024))
    context = await browser.new_context(viewport=VIEWPORT)
    try:
        tab = await context.new_page()
        await tab.goto(str(site.make_url("/")))
        # Slow the upload down to ~1 MB/s, so there is time to watch and cancel it.
        cdp = await context.new_cdp_session(tab)
        await cdp.send("Network.enable")
        await cdp.send(
            "Network.emulateNetworkConditions",
            {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 1e6},
        )
        await tab.set_input_files("#file", str(big))
        await tab.wait_for_function(
            "(pattern) => new RegExp(pattern).test("
            "document.querySelector('#uploads .upload .stats').textContent)",
            arg=PROGRESS_STATS,
            timeout=STEP_TIMEOUT_MS,
        )
        await tab.click("#uploads .upload .cancel")
        await tab.wait_for_selector("#uploads .upload.failed", timeout=STEP_TIMEOUT_MS)
        assert await tab.inner_text("#uploads .upload .stats") == "Upload cancelled."
        assert (await site.get("/videos/slow.webm")).status == 404
    finally:
        await context.close()


async def test_pages_through_the_list_and_copies_links(
    site: TestClient[Any, Any], browser: Any
) -> None:
    keys = [f"paged/{n:02d}.webm" for n in range(12)]
    for key in keys:
        assert (await site.put(f"/videos/{key}", data=b"x")).status == 201
    context = await browser.new_context(viewport=VIEWPORT)
    await context.grant_permissions(["clipboard-read", "clipboard-write"])
    try:
        tab = await context.new_page()
        await tab.goto(str(site.make_url("/")))
        rows = tab.locator("tr[data-key]")
        await tab.locator(f'tr[data-key="{keys[11]}"]').wait_for(timeout=STEP_TIMEOUT_MS)
        assert await rows.count() == 12  # all on one page of 20

        await tab.select_option("#limit", "10")
        await tab.locator(f'tr[data-key="{keys[11]}"]').wait_for(
            state="detached", timeout=STEP_TIMEOUT_MS
        )
        assert await rows.count() == 10
        assert await tab.is_disabled("#prev")

        await tab.click("#next")
        await tab.locator(f'tr[data-key="{keys[10]}"]').wait_for(timeout=STEP_TIMEOUT_MS)
        assert [await r.get_attribute("data-key") for r in await rows.all()] == keys[10:]
        assert await tab.is_disabled("#next")

        await tab.locator(f'tr[data-key="{keys[11]}"] button.copy').click()
        await tab.wait_for_selector("#message:not([hidden])", timeout=STEP_TIMEOUT_MS)
        copied = await tab.evaluate("() => navigator.clipboard.readText()")
        assert copied == str(site.make_url(f"/videos/{keys[11]}"))

        await tab.click("#prev")
        await tab.locator(f'tr[data-key="{keys[0]}"]').wait_for(timeout=STEP_TIMEOUT_MS)
        assert await rows.count() == 10
    finally:
        await context.close()


@pytest.fixture
async def guarded_site(
    start_vidproxy: Callable[..., Any], make_config: Callable[..., Config]
) -> TestClient[Any, Any]:
    auth = {"write_tokens": [WRITE_TOKEN], "read_tokens": ["reader"], "signing_key": "k" * 32}
    return await start_vidproxy(make_config("fs", auth=auth))


WRITE_TOKEN = "page-writer"


async def test_with_tokens_the_player_and_links_use_signed_urls(
    guarded_site: TestClient[Any, Any], browser: Any, webm_clip: Path
) -> None:
    context = await browser.new_context(viewport=VIEWPORT)
    await context.grant_permissions(["clipboard-read", "clipboard-write"])
    try:
        tab = await context.new_page()
        media: list[str] = []

        def record(request: Any) -> None:
            if request.method == "GET" and "/videos/clip.webm" in request.url:
                media.append(request.url)

        tab.on("request", record)
        await tab.goto(str(guarded_site.make_url("/")))
        await tab.wait_for_selector("#message.error", timeout=STEP_TIMEOUT_MS)
        assert "401 unauthorized" in await tab.inner_text("#message")

        await tab.fill("#token", WRITE_TOKEN)
        await tab.click("#token-form button[type=submit]")
        await tab.wait_for_function(
            "() => document.getElementById('page-info').textContent.startsWith('Page 1')",
            timeout=STEP_TIMEOUT_MS,
        )
        await tab.set_input_files("#file", str(webm_clip))
        row = tab.locator('tr[data-key="clip.webm"]')
        await row.wait_for(timeout=STEP_TIMEOUT_MS)

        await row.locator("button.play").click()
        await tab.wait_for_function(
            "() => document.getElementById('player').readyState >= 1", timeout=STEP_TIMEOUT_MS
        )
        assert media, "the player should have fetched the video"
        assert all("sig=" in url and "expires=" in url for url in media), media

        await row.locator("button.copy").click()
        await tab.wait_for_selector("#message:not(.error):not([hidden])", timeout=STEP_TIMEOUT_MS)
        link = await tab.evaluate("() => navigator.clipboard.readText()")
        assert "sig=" in link
        # The link works with no Authorization header at all.
        path = link.removeprefix(str(guarded_site.make_url("")))
        assert (await guarded_site.get(path)).status == 200
    finally:
        await context.close()


TOKEN_IN_STORAGE = """() => [sessionStorage.getItem('vidproxy.token'),
                            localStorage.getItem('vidproxy.token')]"""


async def save_token(tab: Any, token: str, *, remember: bool) -> None:
    await tab.fill("#token", token)
    await tab.set_checked("#token-remember", remember)
    await tab.click("#token-form button[type=submit]")
    await tab.wait_for_selector("#message:not([hidden])", timeout=STEP_TIMEOUT_MS)


async def test_the_token_lasts_for_the_tab_unless_remembered(
    guarded_site: TestClient[Any, Any], browser: Any
) -> None:
    url = str(guarded_site.make_url("/"))
    context = await browser.new_context(viewport=VIEWPORT)
    try:
        tab = await context.new_page()
        await tab.goto(url)
        await save_token(tab, WRITE_TOKEN, remember=False)
        assert await tab.evaluate(TOKEN_IN_STORAGE) == [WRITE_TOKEN, None]
        await tab.reload()  # the same tab keeps it
        assert await tab.input_value("#token") == WRITE_TOKEN
        other = await context.new_page()  # another tab (or a restart) does not
        await other.goto(url)
        assert await other.input_value("#token") == ""

        await save_token(tab, WRITE_TOKEN, remember=True)
        assert await tab.evaluate(TOKEN_IN_STORAGE) == [None, WRITE_TOKEN]
        third = await context.new_page()
        await third.goto(url)
        assert await third.input_value("#token") == WRITE_TOKEN
        assert await third.is_checked("#token-remember")

        await third.click("#token-clear")
        assert await third.evaluate(TOKEN_IN_STORAGE) == [None, None]
    finally:
        await context.close()


async def test_a_video_link_opened_in_its_own_tab_plays(
    site: TestClient[Any, Any], browser: Any, webm_clip: Path
) -> None:
    """What "Copy link" hands out, opened directly: Chromium's own player, under the
    policy objects shown inline get (no script, but the player may load the media)."""
    data = await asyncio.to_thread(webm_clip.read_bytes)
    stored = await site.put("/videos/clip.webm", data=data, skip_auto_headers={"Content-Type"})
    assert stored.status == 201
    assert (await stored.json())["content_type"] == "video/webm"
    context = await browser.new_context()
    try:
        tab = await context.new_page()
        blocked = csp_violations(tab)
        await tab.goto(str(site.make_url("/videos/clip.webm")))
        video = "document.querySelector('video')"
        await tab.wait_for_function(f"() => {video}.readyState >= 1", timeout=STEP_TIMEOUT_MS)
        duration = await tab.evaluate(f"() => {video}.duration")
        assert abs(duration - CLIP_SECONDS) < SEEK_TOLERANCE
        assert blocked == []
    finally:
        await context.close()


async def test_the_tus_client_is_served_to_anyone_as_vendored(
    guarded_site: TestClient[Any, Any],
) -> None:
    response = await guarded_site.get("/tus.min.js")
    assert response.status == 200
    assert response.content_type == "text/javascript"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    vendored = resources.files("vidproxy.web").joinpath("static/tus.min.js").read_bytes()
    assert await response.read() == vendored
    notice = resources.files("vidproxy.web").joinpath("static/tus.min.js.LICENSE").read_text()
    for bundled in ("tus-js-client (MIT)", "js-base64 (BSD-3-Clause)", "url-parse (MIT)"):
        assert bundled in notice
    again = await guarded_site.get(
        "/tus.min.js", headers={"If-None-Match": response.headers["ETag"]}
    )
    assert again.status == 304


async def test_the_icon_is_served_to_anyone(guarded_site: TestClient[Any, Any]) -> None:
    response = await guarded_site.get("/favicon.ico")  # no token, with tokens configured
    assert response.status == 200
    assert response.content_type == "image/x-icon"
    icon = await response.read()
    assert icon[:4] == b"\x00\x00\x01\x00"  # an ICO directory, of one image
    assert icon == page.FAVICON
    assert response.headers["Cache-Control"].startswith("public, max-age=")
