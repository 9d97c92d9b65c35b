"""How every object answer tells a browser to treat the stored bytes, on every path
that can answer: the fs store, S3 without the cache, S3 through a cold cache
(MISS) and a warm one (HIT); for GET, HEAD, 206 and 304.

Media and raster images are inline; everything else is an attachment named after
the key. Every answer forbids script (a sandboxing CSP) and sniffing, and keeps
the stored Content-Type. The policies are written out here, not imported.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient

from vidproxy.config import Config

Client = TestClient[Any, Any]
Wait = Callable[..., Awaitable[None]]

INLINE_CSP = "sandbox allow-same-origin; default-src 'none'; media-src 'self'; img-src 'self'"
DOWNLOAD_CSP = "sandbox; default-src 'none'"
BODY = bytes(range(256)) * 8
SERVINGS = ["fs", "s3", "s3-miss", "s3-hit"]


@dataclass(frozen=True)
class Case:
    key: str
    sent_type: str | None  # None: no Content-Type, vidproxy guesses from the key
    stored_type: str
    disposition: str | None  # None: inline


CASES = [
    Case("inline/clip.mp4", "video/mp4", "video/mp4", None),
    Case("inline/clip.webm", None, "video/webm", None),
    Case("inline/tone.ogg", None, "audio/ogg", None),
    Case("inline/photo.jpg", None, "image/jpeg", None),
    Case("inline/still.webp", "image/webp", "image/webp", None),
    Case("down/page.html", None, "text/html", 'attachment; filename="page.html"'),
    Case("down/pic.svg", None, "image/svg+xml", 'attachment; filename="pic.svg"'),
    Case("down/clip.mp4", "text/html", "text/html", 'attachment; filename="clip.mp4"'),
    Case(
        "down/list.m3u8",
        None,
        "application/vnd.apple.mpegurl",
        'attachment; filename="list.m3u8"',
    ),
    Case(
        'down/prêt à "voir".bin',
        "application/octet-stream",
        "application/octet-stream",
        'attachment; filename="pr_t _ _voir_.bin"; '
        "filename*=UTF-8''pr%C3%AAt%20%C3%A0%20%22voir%22.bin",
    ),
]
# What each request must answer; 304 repeats everything but the type and length.
REQUESTS: list[tuple[str, dict[str, str], int]] = [
    ("GET", {}, 200),
    ("HEAD", {}, 200),
    ("GET", {"Range": "bytes=0-9"}, 206),
    ("HEAD", {"Range": "bytes=-10"}, 206),
    ("GET", {"If-None-Match": "ETAG"}, 304),
]


def config_for(serving: str, make_config: Callable[..., Config]) -> Config:
    if serving == "fs":
        return make_config("fs")
    return make_config("s3", cache={"enabled": serving != "s3"})


async def store(client: Client, case: Case) -> str:
    headers = {"Content-Type": case.sent_type} if case.sent_type else {}
    response = await client.put(
        url(case), data=BODY, headers=headers, skip_auto_headers={"Content-Type"}
    )
    assert response.status == 201, await response.text()
    stored = await response.json()
    assert stored["content_type"] == case.stored_type
    return str(stored["etag"])


def url(case: Case) -> str:
    return "/videos/" + quote(case.key)


async def warm(client: Client, case: Case, wait_until: Wait) -> None:
    await (await client.get(url(case))).read()

    async def is_hit() -> bool:
        return (await client.head(url(case))).headers.get("X-Cache") == "HIT"

    await wait_until(is_hit, f"{case.key} is a cache hit")


def problems_with(case: Case, status: int, headers: Any) -> list[str]:
    expected = {
        "Content-Security-Policy": DOWNLOAD_CSP if case.disposition else INLINE_CSP,
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": case.disposition,
    }
    if status != 304:
        expected["Content-Type"] = case.stored_type
    return [
        f"{name}: {headers.get(name)!r}, not {value!r}"
        for name, value in expected.items()
        if headers.get(name) != value
    ]


@pytest.mark.parametrize("serving", SERVINGS)
async def test_every_answer_says_how_to_treat_the_bytes(
    serving: str,
    make_config: Callable[..., Config],
    start_vidproxy: Callable[[Config], Awaitable[Client]],
    wait_until: Wait,
) -> None:
    client = await start_vidproxy(config_for(serving, make_config))
    expected_cache = {"fs": None, "s3": None, "s3-miss": "MISS", "s3-hit": "HIT"}[serving]
    problems: list[str] = []
    for case in CASES:
        etag = await store(client, case)
        for method, headers, status in REQUESTS:
            if serving == "s3-miss":
                await store(client, case)  # a write drops the cached copy
            elif serving == "s3-hit":
                await warm(client, case, wait_until)
            sent = {k: etag if v == "ETAG" else v for k, v in headers.items()}
            response = await client.request(method, url(case), headers=sent)
            body = await response.read()
            where = f"{case.key} {method} {headers}"
            assert response.status == status, where
            assert response.headers.get("X-Cache") == expected_cache, where
            if method == "GET" and status == 200:
                assert body == BODY, where
            problems += [f"{where}: {p}" for p in problems_with(case, status, response.headers)]
    assert problems == []


async def test_the_download_alias_answers_the_same_headers(
    make_config: Callable[..., Config], start_vidproxy: Callable[[Config], Awaitable[Client]]
) -> None:
    client = await start_vidproxy(make_config("fs"))
    case = CASES[7]  # text/html stored under clip.mp4
    await store(client, case)
    response = await client.get("/download/" + quote(case.key))
    assert await response.read() == BODY
    assert problems_with(case, 200, response.headers) == []
