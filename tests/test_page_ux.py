"""The page as a new user meets it, in Debian's Chromium at a desktop (1280x800)
and a phone (390x844) viewport: what is on screen is checked by element geometry
(getBoundingClientRect), never by pixels. A screenshot of each is kept in
tests/artifacts/ for people to look at."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from chromium import launched_chromium
from test_page import STEP_TIMEOUT_MS, webm_clip  # noqa: F401 -- a fixture

from vidproxy.config import Config

Client = TestClient[Any, Any]
ARTIFACTS = Path(__file__).parent / "artifacts"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
WRITE_TOKEN = "ux-writer"
READ_TOKEN = "ux-reader"
SIGNING_KEY = "s" * 32
LONG_KEYS = [
    "demo/live.mp4",
    "talks/2026/keynote-opening-session-final-cut.webm",
    "a" * 70 + ".mp4",  # no place to break but inside it
]
# What the page shows of a stored object that will not play, at upload time.
NOT_PLAYABLE = "but not a playable video"


@pytest.fixture(params=[DESKTOP, PHONE], ids=["desktop", "phone"])
def viewport(request: pytest.FixtureRequest) -> dict[str, int]:
    return dict(request.param)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with launched_chromium() as browser:
        yield browser


@pytest.fixture
def start_site(
    start_vidproxy: Callable[..., Any], make_config: Callable[..., Config]
) -> Callable[..., Any]:
    async def start(**sections: Any) -> Client:
        return await start_vidproxy(make_config("fs", **sections))

    return start


@pytest.fixture
async def tab_for(browser: Any, viewport: dict[str, int]) -> AsyncIterator[Callable[..., Any]]:
    """Open the page of a site in a fresh context at the viewport; a token, if
    given, is in the tab's storage as the page keeps it."""
    contexts: list[Any] = []

    async def open_tab(site: Client, token: str | None = None) -> Any:
        context = await browser.new_context(viewport=viewport)
        contexts.append(context)
        tab = await context.new_page()
        if token:
            await tab.add_init_script(f"sessionStorage.setItem('vidproxy.token', '{token}')")
        await tab.goto(str(site.make_url("/")))
        return tab

    yield open_tab
    for context in contexts:
        await context.close()


async def screenshot(tab: Any, name: str, viewport: dict[str, int]) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await tab.screenshot(path=str(ARTIFACTS / f"{name}-{viewport['width']}.png"), full_page=True)


async def put(site: Client, key: str, body: bytes = b"x", token: str | None = None) -> None:
    headers = {"Content-Type": "video/mp4"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    assert (await site.put(f"/videos/{key}", data=body, headers=headers)).status == 201


async def wait_for_rows(tab: Any, count: int) -> None:
    await tab.wait_for_function(
        "(n) => document.querySelectorAll('#videos tr[data-key]').length === n",
        arg=count,
        timeout=STEP_TIMEOUT_MS,
    )


async def list_text(tab: Any) -> str:
    return str(await tab.inner_text("#videos"))


# ---- layout ------------------------------------------------------------------------

# Everything in the header and main stays inside the viewport's width; the page
# does not scroll sideways; cards keep a margin from the edges.
LAYOUT_PROBLEMS = """() => {
  const width = document.documentElement.clientWidth;
  const problems = [];
  const scroll = document.documentElement.scrollWidth;
  if (scroll > width) problems.push(`the page is ${scroll} px wide in ${width}`);
  for (const el of document.querySelectorAll("header *, main *")) {
    const r = el.getBoundingClientRect();
    if (!r.width && !r.height) continue;  // not shown
    if (r.left < -0.5 || r.right > width + 0.5) {
      problems.push(`${el.tagName}#${el.id}.${el.className} spans ${r.left}..${r.right}`);
    }
  }
  for (const card of document.querySelectorAll(".card")) {
    const r = card.getBoundingClientRect();
    if (r.left < 8 || width - r.right < 8) {
      problems.push(`card ${card.id} is ${r.left} px and ${width - r.right} px from the edges`);
    }
  }
  return problems;
}"""

# A key breaks only where it has to: inside a "/"-separated segment only when the
# segment alone is wider than its cell, and not at all when the whole key fits.
KEY_BREAK_PROBLEMS = """() => {
  const problems = [];
  const natural = (text, like) => {
    const probe = document.createElement("span");
    probe.style.cssText = "position:absolute;visibility:hidden;white-space:nowrap";
    probe.style.font = getComputedStyle(like).font;
    probe.textContent = text;
    document.body.append(probe);
    const width = probe.getBoundingClientRect().width;
    probe.remove();
    return width;
  };
  for (const key of document.querySelectorAll("#videos .key")) {
    const cell = key.closest("td");
    const style = getComputedStyle(cell);
    const room = cell.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    const line = parseFloat(getComputedStyle(key).lineHeight);
    const segments = [...key.querySelectorAll(".segment")];
    const lines = (segment) => Math.round(segment.getBoundingClientRect().height / line);
    // Lines of the key: one per row of segments, plus those inside wrapped segments.
    const rows = new Set(segments.map((s) => Math.round(s.getBoundingClientRect().top)));
    const keyLines = rows.size + segments.reduce((n, s) => n + lines(s) - 1, 0);
    if (natural(key.textContent, key) <= room && keyLines > 1) {
      problems.push(`${key.textContent} fits in ${room} px but takes ${keyLines} lines`);
    }
    for (const segment of segments) {
      if (natural(segment.textContent, segment) <= room && lines(segment) > 1) {
        problems.push(`${key.textContent}: "${segment.textContent}" broke inside, with room`);
      }
    }
  }
  return problems;
}"""

FORGET_IS_ON_SCREEN = """() => {
  const button = document.getElementById("token-clear");
  const r = button.getBoundingClientRect();
  const inside = r.left >= 0 && r.right <= document.documentElement.clientWidth
    && r.top >= 0 && r.bottom <= window.innerHeight;
  return inside && document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2) === button;
}"""


async def test_the_page_fits_the_viewport_and_keys_break_after_slashes(
    start_site: Callable[..., Any], tab_for: Callable[..., Any], viewport: dict[str, int]
) -> None:
    site = await start_site()
    for key in LONG_KEYS:
        await put(site, key)
    tab = await tab_for(site)
    await wait_for_rows(tab, len(LONG_KEYS))
    await screenshot(tab, "page-layout", viewport)
    assert await tab.evaluate(LAYOUT_PROBLEMS) == []
    assert await tab.evaluate(FORGET_IS_ON_SCREEN)
    assert await tab.evaluate(KEY_BREAK_PROBLEMS) == []
    # The key the report quoted reads whole, on one line, at either width.
    short = tab.locator('tr[data-key="demo/live.mp4"] button.play')
    box = await short.bounding_box()
    line = await short.evaluate("(el) => parseFloat(getComputedStyle(el).lineHeight)")
    assert box is not None and box["height"] < 1.5 * line


async def test_tapping_a_video_brings_the_player_into_view(
    start_site: Callable[..., Any],
    tab_for: Callable[..., Any],
    viewport: dict[str, int],
    webm_clip: Path,  # noqa: F811 -- the fixture imported above
) -> None:
    site = await start_site()
    for n in range(8):  # enough rows to push a phone's player below the fold
        await put(site, f"other/{n:02d}.mp4")
    await put(site, "zz/clip.webm", await asyncio.to_thread(webm_clip.read_bytes))
    tab = await tab_for(site)
    await wait_for_rows(tab, 9)
    row = tab.locator('tr[data-key="zz/clip.webm"]')
    await row.scroll_into_view_if_needed()
    await row.locator("button.play").click()
    # The whole player, its controls included, on screen (a smooth scroll takes a moment).
    await tab.wait_for_function(
        """() => {
            const r = document.getElementById('player').getBoundingClientRect();
            return r.top >= 0 && r.bottom <= window.innerHeight;
        }""",
        timeout=STEP_TIMEOUT_MS,
    )
    await tab.wait_for_function(
        "() => document.getElementById('player').readyState >= 1", timeout=STEP_TIMEOUT_MS
    )
    await screenshot(tab, "page-playing", viewport)
    assert await tab.evaluate(LAYOUT_PROBLEMS) == []


# ---- uploads -----------------------------------------------------------------------

ROWS = """() => [...document.querySelectorAll('#uploads .upload')].map((row) => ({
    status: row.className.replace('upload', '').trim(),
    name: row.querySelector('.name').textContent,
    stats: row.querySelector('.stats').textContent,
}))"""

FINISHED = """(n) => {
    const rows = document.querySelectorAll('#uploads .upload');
    const over = (r) => /\\b(done|warn|failed)\\b/.test(r.className);
    return rows.length === n && [...rows].every(over);
}"""


async def wait_for_uploads(tab: Any, count: int, final: dict[str, str] | None = None) -> list[Any]:
    await tab.wait_for_function(FINISHED, arg=count, timeout=STEP_TIMEOUT_MS)
    if final:  # a stored upload can still turn "warn" once the player has read it
        await tab.wait_for_function(
            """(want) => [...document.querySelectorAll('#uploads .upload')].every((row) =>
                row.className.includes(want[row.querySelector('.name').textContent]))""",
            arg=final,
            timeout=3 * STEP_TIMEOUT_MS,
        )
    return list(await tab.evaluate(ROWS))


async def test_each_file_gets_its_own_progress_row(
    start_site: Callable[..., Any],
    tab_for: Callable[..., Any],
    viewport: dict[str, int],
    webm_clip: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    site = await start_site()
    names = ["one.webm", "two.webm", "three.webm"]
    for name in names:
        shutil.copyfile(webm_clip, tmp_path / name)
    tab = await tab_for(site)
    await tab.set_input_files("#file", [str(tmp_path / name) for name in names])
    rows = await wait_for_uploads(tab, 3, dict.fromkeys(names, "done"))
    assert [row["name"] for row in rows] == names
    assert all(row["stats"].startswith(f"Stored {row['name']} · ") for row in rows), rows
    await wait_for_rows(tab, 3)
    await screenshot(tab, "page-uploads", viewport)
    assert await tab.evaluate(LAYOUT_PROBLEMS) == []


BAR_IS_RED = """(row) => {
    const fill = row.querySelector('.bar > div'), bar = row.querySelector('.bar');
    const red = document.createElement('div');
    red.style.background = 'var(--danger)';
    document.body.append(red);
    const danger = getComputedStyle(red).backgroundColor;
    red.remove();
    const full = fill.getBoundingClientRect().width >= bar.getBoundingClientRect().width - 0.5;
    return full && getComputedStyle(fill).backgroundColor === danger;
}"""


async def test_a_failed_upload_turns_red_with_its_error_and_the_list_says_why_it_is_empty(
    start_site: Callable[..., Any],
    tab_for: Callable[..., Any],
    viewport: dict[str, int],
    tmp_path: Path,
) -> None:
    site = await start_site(auth={"write_tokens": [WRITE_TOKEN], "read_tokens": [READ_TOKEN]})
    clip = tmp_path / "refused.webm"
    clip.write_bytes(b"\x1a\x45\xdf\xa3webm")
    tab = await tab_for(site)  # no token
    await tab.wait_for_function(
        "() => document.querySelector('#videos td.empty.error')", timeout=STEP_TIMEOUT_MS
    )
    shown = await list_text(tab)
    assert "401 unauthorized" in shown and "No videos yet" not in shown
    await tab.set_input_files("#file", str(clip))
    [row] = await wait_for_uploads(tab, 1)
    assert row["status"] == "failed"
    assert row["stats"].startswith("Upload failed: 401 unauthorized: "), row
    # The bar's width animates: wait for it to fill.
    red = f"() => ({BAR_IS_RED})(document.querySelector('#uploads .upload'))"
    await tab.wait_for_function(red, timeout=STEP_TIMEOUT_MS)
    assert "No videos yet" not in await list_text(tab)
    await screenshot(tab, "page-refused", viewport)
    assert await tab.evaluate(LAYOUT_PROBLEMS) == []


async def test_the_list_says_loading_and_then_that_the_first_upload_is_on_its_way(
    start_site: Callable[..., Any], tab_for: Callable[..., Any], tmp_path: Path
) -> None:
    site = await start_site()
    tab = await tab_for(site)
    await tab.wait_for_function(
        "() => document.getElementById('videos').textContent.includes('No videos yet')",
        timeout=STEP_TIMEOUT_MS,
    )
    # Held: the list must say it is loading, never "No videos yet", until it is in.
    released = asyncio.Event()

    async def hold(route: Any) -> None:
        await released.wait()
        await route.continue_()

    await tab.route("**/videos?*", hold)
    await tab.reload()
    await tab.wait_for_selector("#videos td.empty", timeout=STEP_TIMEOUT_MS)
    assert await list_text(tab) == "Loading…"
    released.set()
    await tab.wait_for_function(
        "() => document.getElementById('videos').textContent.includes('No videos yet')",
        timeout=STEP_TIMEOUT_MS,
    )
    # The first upload, slowed down: the empty list says it is coming.
    cdp = await tab.context.new_cdp_session(tab)
    await cdp.send("Network.enable")
    await cdp.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 1e6},
    )
    big = tmp_path / "first.webm"
    big.write_bytes(b"\x1a\x45\xdf\xa3" + bytes(2 * 1024 * 1024))
    await tab.set_input_files("#file", str(big))
    await tab.wait_for_selector("#uploads .upload.running", timeout=STEP_TIMEOUT_MS)
    shown = await list_text(tab)
    assert "on its way" in shown and "No videos yet" not in shown
    await tab.click("#uploads .upload .cancel")
    await tab.wait_for_function(
        "() => document.getElementById('videos').textContent.includes('No videos yet')",
        timeout=STEP_TIMEOUT_MS,
    )


async def test_a_folder_with_dot_segments_is_refused_with_a_message(
    start_site: Callable[..., Any],
    tab_for: Callable[..., Any],
    viewport: dict[str, int],
    tmp_path: Path,
) -> None:
    site = await start_site()
    clip = tmp_path / "x.webm"
    clip.write_bytes(b"\x1a\x45\xdf\xa3webm")
    tab = await tab_for(site)
    writes: list[str] = []
    tab.on("request", lambda r: writes.append(r.url) if r.method in ("PUT", "POST") else None)
    for folder in ("bad/../x", "./x", "a//b"):
        await tab.fill("#prefix", folder)
        await tab.set_input_files("#file", str(clip))
        await tab.wait_for_selector("#message.error:not([hidden])", timeout=STEP_TIMEOUT_MS)
        problem = await tab.inner_text("#prefix-problem")
        assert folder in problem and '"." or ".."' in problem, problem
        assert await tab.get_attribute("#prefix", "aria-invalid") == "true"
    assert writes == []
    assert await tab.locator("#uploads .upload").count() == 0
    await screenshot(tab, "page-folder", viewport)
    assert await tab.evaluate(LAYOUT_PROBLEMS) == []
    # A good folder goes through, its slashes trimmed.
    await tab.fill("#prefix", "/talks/2026/")
    assert await tab.inner_text("#prefix-problem") == ""
    await tab.set_input_files("#file", str(clip))
    await wait_for_rows(tab, 1)
    assert await tab.locator('tr[data-key="talks/2026/x.webm"]').count() == 1


async def test_uploads_that_will_not_play_say_so_when_stored(
    start_site: Callable[..., Any],
    tab_for: Callable[..., Any],
    viewport: dict[str, int],
    webm_clip: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    site = await start_site()
    files = {
        "empty.mp4": b"",
        "notes.txt": b"just some text\n",
        "noise.mp4": os.urandom(64 * 1024),
        "clip.webm": await asyncio.to_thread(webm_clip.read_bytes),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    tab = await tab_for(site)
    await tab.set_input_files("#file", [str(tmp_path / name) for name in files])
    final = {"empty.mp4": "warn", "notes.txt": "warn", "noise.mp4": "warn", "clip.webm": "done"}
    rows = {row["name"]: row for row in await wait_for_uploads(tab, 4, final)}
    # Each stored (the bytes are the user's), each told apart at once.
    for name, data in files.items():
        assert await (await site.get(f"/videos/{name}")).read() == data
    assert rows["empty.mp4"]["stats"] == f"Stored empty.mp4 · 0 B, {NOT_PLAYABLE} (it is empty)."
    assert "MB/s" not in rows["empty.mp4"]["stats"]
    assert f"{NOT_PLAYABLE} (type text/plain)" in rows["notes.txt"]["stats"]
    noise = rows["noise.mp4"]["stats"]
    assert f"{NOT_PLAYABLE} (type video/mp4, but this browser cannot read it" in noise
    assert NOT_PLAYABLE not in rows["clip.webm"]["stats"]
    await screenshot(tab, "page-not-playable", viewport)
    assert await tab.evaluate(LAYOUT_PROBLEMS) == []


# ---- a viewer with a read token, the icon ------------------------------------------


async def test_a_read_token_plays_through_signed_links(
    start_site: Callable[..., Any],
    tab_for: Callable[..., Any],
    webm_clip: Path,  # noqa: F811
) -> None:
    auth = {"write_tokens": [WRITE_TOKEN], "read_tokens": [READ_TOKEN], "signing_key": SIGNING_KEY}
    site = await start_site(auth=auth)
    await put(site, "clip.webm", await asyncio.to_thread(webm_clip.read_bytes), WRITE_TOKEN)
    tab = await tab_for(site, READ_TOKEN)
    media: list[str] = []
    tab.on("request", lambda r: media.append(r.url) if "/videos/clip.webm" in r.url else None)
    await wait_for_rows(tab, 1)
    await tab.locator('tr[data-key="clip.webm"] button.play').click()
    await tab.wait_for_function(
        "() => document.getElementById('player').readyState >= 1", timeout=STEP_TIMEOUT_MS
    )
    assert media and all("sig=" in url for url in media), media
    assert await tab.locator("#message.error:not([hidden])").count() == 0


async def test_without_a_signing_key_the_player_error_says_why(
    start_site: Callable[..., Any],
    tab_for: Callable[..., Any],
    webm_clip: Path,  # noqa: F811
) -> None:
    site = await start_site(auth={"write_tokens": [WRITE_TOKEN], "read_tokens": [READ_TOKEN]})
    await put(site, "clip.webm", await asyncio.to_thread(webm_clip.read_bytes), WRITE_TOKEN)
    tab = await tab_for(site, READ_TOKEN)
    await wait_for_rows(tab, 1)
    await tab.locator('tr[data-key="clip.webm"] button.play').click()
    await tab.wait_for_selector("#message.error:not([hidden])", timeout=STEP_TIMEOUT_MS)
    message = await tab.inner_text("#message")
    assert "could not be signed" in message and "signing_disabled" in message, message


async def test_loading_the_page_asks_for_nothing_that_is_missing(
    start_site: Callable[..., Any], tab_for: Callable[..., Any]
) -> None:
    site = await start_site()
    await put(site, "demo/live.mp4")
    tab = await tab_for(site)
    failed: list[str] = []
    tab.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
    await tab.reload()
    await wait_for_rows(tab, 1)
    icon = await tab.evaluate(
        "() => fetch(document.querySelector('link[rel=icon]').href).then((r) => r.status)"
    )
    assert icon == 200
    assert failed == []


# ---- a player on another origin ------------------------------------------------------

CROSS_ORIGIN_PAGE = """<!doctype html><meta charset="utf-8"><title>elsewhere</title>
<video id="v" crossorigin="anonymous" muted preload="metadata"></video>"""

CROSS_ORIGIN_FETCH = """async ([base, token]) => {
    const ranged = await fetch(base + "/videos/clip.webm", {
        headers: { Range: "bytes=0-99", Authorization: "Bearer " + token },
    });
    const body = await ranged.arrayBuffer();
    const put = await fetch(base + "/videos/from-elsewhere.webm", {
        method: "PUT", body: "abc", headers: { Authorization: "Bearer " + token },
    });
    const refused = await fetch(base + "/videos/x.webm", { method: "DELETE" });
    return {
        status: ranged.status, length: body.byteLength,
        contentRange: ranged.headers.get("Content-Range"),
        etag: ranged.headers.get("ETag"),
        put: put.status, location: put.headers.get("Location"),
        refused: refused.status, refusedError: (await refused.json()).error,
    };
}"""


async def test_a_page_on_an_allowed_origin_fetches_ranges_plays_and_uploads(
    make_config: Callable[..., Config],
    aiohttp_client: Callable[..., Any],
    start_vidproxy: Callable[..., Any],
    browser: Any,
    webm_clip: Path,  # noqa: F811
) -> None:
    elsewhere = web.Application()

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=CROSS_ORIGIN_PAGE, content_type="text/html")

    elsewhere.router.add_get("/", page)
    other = await aiohttp_client(TestServer(elsewhere))
    origin = str(other.make_url("")).rstrip("/")
    config = make_config(
        "fs", server={"cors_origins": [origin]}, auth={"write_tokens": [WRITE_TOKEN]}
    )
    site = await start_vidproxy(config)
    await put(site, "clip.webm", await asyncio.to_thread(webm_clip.read_bytes), WRITE_TOKEN)
    base = str(site.make_url("")).rstrip("/")
    context = await browser.new_context()
    try:
        tab = await context.new_page()
        await tab.goto(origin + "/")
        seen = await tab.evaluate(CROSS_ORIGIN_FETCH, [base, WRITE_TOKEN])
        assert seen["status"] == 206 and seen["length"] == 100, seen
        assert seen["contentRange"].startswith("bytes 0-99/") and seen["etag"], seen
        assert (seen["put"], seen["location"]) == (201, "/videos/from-elsewhere.webm"), seen
        assert (seen["refused"], seen["refusedError"]) == (401, "unauthorized"), seen
        await tab.evaluate(
            "(src) => { document.getElementById('v').src = src; }", base + "/videos/clip.webm"
        )
        await tab.wait_for_function(
            "() => document.getElementById('v').readyState >= 1", timeout=STEP_TIMEOUT_MS
        )
        assert await (await site.get("/videos/from-elsewhere.webm")).read() == b"abc"
    finally:
        await context.close()
