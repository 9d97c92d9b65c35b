"""What operators add to object answers for browsers and caches elsewhere:
``server.cors_origins`` (CORS, with preflights) and ``server.cache_control``,
over real sockets on every path that answers (fs with sendfile, S3 streamed,
through a cold cache and a warm one), errors included."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from vidproxy.config import Config, ConfigError, load_config

Client = TestClient[Any, Any]
Wait = Callable[..., Awaitable[None]]

KEY = "cors/clip.webm"
BODY = bytes(range(256)) * 64
PLAYER = "https://player.example"
OTHER = "https://elsewhere.example"
IMMUTABLE = "public, max-age=31536000, immutable"
TOKEN = "cors-writer"
SERVINGS = ["fs", "s3", "s3-miss", "s3-hit"]
# What a page's fetch with a token and a range preflights.
PREFLIGHT = {
    "Origin": PLAYER,
    "Access-Control-Request-Method": "GET",
    "Access-Control-Request-Headers": "authorization,range",
}


def config_for(serving: str, make_config: Callable[..., Config], **server: Any) -> Config:
    sections: dict[str, Any] = {"server": server}
    if serving == "fs":
        return make_config("fs", **sections)
    return make_config("s3", cache={"enabled": serving != "s3"}, **sections)


async def put(client: Client, key: str = KEY, headers: dict[str, str] | None = None) -> str:
    response = await client.put(f"/videos/{key}", data=BODY, headers=headers or {})
    assert response.status == 201, await response.text()
    return str((await response.json())["etag"])


async def prepare(client: Client, serving: str, wait_until: Wait) -> str:
    """Store KEY and bring it to the state ``serving`` names; its ETag."""
    etag = await put(client)
    if serving == "s3-hit":
        await (await client.get(f"/videos/{KEY}")).read()

        async def is_hit() -> bool:
            return (await client.head(f"/videos/{KEY}")).headers.get("X-Cache") == "HIT"

        await wait_until(is_hit, "the object is a cache hit")
    return etag


def header_list(value: str | None) -> set[str]:
    return {part.strip().lower() for part in (value or "").split(",") if part.strip()}


# ---- Cache-Control ---------------------------------------------------------------------


@pytest.mark.parametrize("serving", SERVINGS)
async def test_cache_control_is_on_every_object_answer(
    serving: str,
    make_config: Callable[..., Config],
    start_vidproxy: Callable[[Config], Awaitable[Client]],
    wait_until: Wait,
) -> None:
    client = await start_vidproxy(config_for(serving, make_config, cache_control=IMMUTABLE))
    etag = await prepare(client, serving, wait_until)
    requests = [
        ("GET", {}, 200),
        ("HEAD", {}, 200),
        ("GET", {"Range": "bytes=10-19"}, 206),
        ("GET", {"If-None-Match": etag}, 304),  # RFC 9110 §15.4.5: a 304 repeats it
    ]
    for method, headers, status in requests:
        response = await client.request(method, f"/videos/{KEY}", headers=headers)
        body = await response.read()
        assert response.status == status
        assert response.headers.get("Cache-Control") == IMMUTABLE, (method, headers)
        if status == 206:
            assert body == BODY[10:20]
    # Not on answers that are no object: errors, lists, the alias's 404.
    for path in (f"/videos/{KEY}x", "/videos", "/download/nothing"):
        assert "Cache-Control" not in (await client.get(path)).headers, path


async def test_no_cache_control_by_default(
    make_config: Callable[..., Config], start_vidproxy: Callable[[Config], Awaitable[Client]]
) -> None:
    client = await start_vidproxy(make_config("fs"))
    await put(client)
    assert "Cache-Control" not in (await client.get(f"/videos/{KEY}")).headers


@pytest.mark.parametrize("value", ["public\r\nX-Evil: 1", "max-age=60\n", "café"])
def test_a_cache_control_that_is_no_header_value_stops_the_start(value: str) -> None:
    with pytest.raises(ConfigError, match=r"server\.cache_control"):
        load_config(None, env={}, overrides={"server": {"cache_control": value}})


# ---- CORS --------------------------------------------------------------------------------


@pytest.mark.parametrize("serving", SERVINGS)
async def test_a_page_on_an_allowed_origin_reads_ranges_and_their_headers(
    serving: str,
    make_config: Callable[..., Config],
    start_vidproxy: Callable[[Config], Awaitable[Client]],
    wait_until: Wait,
) -> None:
    client = await start_vidproxy(config_for(serving, make_config, cors_origins=[PLAYER]))
    await prepare(client, serving, wait_until)
    headers = {"Origin": PLAYER, "Range": "bytes=100-199"}
    response = await client.get(f"/videos/{KEY}", headers=headers)
    assert (response.status, await response.read()) == (206, BODY[100:200])
    assert response.headers["Access-Control-Allow-Origin"] == PLAYER
    exposed = header_list(response.headers.get("Access-Control-Expose-Headers"))
    wanted = {"content-range", "accept-ranges", "content-length", "etag", "x-content-sha256"}
    assert wanted <= exposed
    assert "origin" in header_list(response.headers.get("Vary"))


async def test_the_preflight_of_a_ranged_fetch_with_a_token_is_answered(
    make_config: Callable[..., Config], start_vidproxy: Callable[[Config], Awaitable[Client]]
) -> None:
    auth = {"write_tokens": [TOKEN], "read_tokens": ["reader"]}
    client = await start_vidproxy(make_config("fs", server={"cors_origins": [PLAYER]}, auth=auth))
    response = await client.options(f"/videos/{KEY}", headers=PREFLIGHT)  # no token: none sent
    assert response.status == 204, await response.text()
    assert response.headers["Access-Control-Allow-Origin"] == PLAYER
    methods = header_list(response.headers["Access-Control-Allow-Methods"])
    assert {"get", "head", "put", "delete"} <= methods
    allowed = header_list(response.headers["Access-Control-Allow-Headers"])
    needed = {"authorization", "range", "content-type", "if-none-match", "if-range"}
    assert needed <= allowed
    assert int(response.headers["Access-Control-Max-Age"]) > 0
    vary = header_list(response.headers.get("Vary"))
    assert {"origin", "access-control-request-method", "access-control-request-headers"} <= vary
    # The list and /sign preflight too, with what their routes take.
    listed = await client.options("/videos", headers=PREFLIGHT)
    assert listed.status == 204
    assert {"get", "post"} <= header_list(listed.headers["Access-Control-Allow-Methods"])
    sign = await client.options(
        "/sign", headers={**PREFLIGHT, "Access-Control-Request-Method": "POST"}
    )
    assert sign.status == 204


async def test_an_error_answer_is_readable_cross_origin(
    make_config: Callable[..., Config], start_vidproxy: Callable[[Config], Awaitable[Client]]
) -> None:
    # The page on the other origin can show "401 unauthorized: ...", not a CORS failure.
    auth = {"write_tokens": [TOKEN], "read_tokens": ["reader"]}
    client = await start_vidproxy(make_config("fs", server={"cors_origins": [PLAYER]}, auth=auth))
    response = await client.get("/videos", headers={"Origin": PLAYER})
    assert response.status == 401
    assert response.headers["Access-Control-Allow-Origin"] == PLAYER
    assert (await response.json())["error"] == "unauthorized"


async def test_a_cross_origin_upload_stores_and_exposes_location(
    make_config: Callable[..., Config], start_vidproxy: Callable[[Config], Awaitable[Client]]
) -> None:
    client = await start_vidproxy(make_config("fs", server={"cors_origins": [PLAYER]}))
    response = await client.post("/videos", data=BODY, headers={"Origin": PLAYER})
    assert response.status == 201
    assert "location" in header_list(response.headers["Access-Control-Expose-Headers"])
    stored = await client.get(response.headers["Location"])
    assert await stored.read() == BODY


@pytest.mark.parametrize(
    ("configured", "origin", "allowed"),
    [
        ([PLAYER], OTHER, None),
        ([PLAYER], PLAYER + ":443", None),  # another origin as far as the string goes
        ([PLAYER], "https://PLAYER.example", "https://PLAYER.example"),
        (["HTTPS://Player.Example"], PLAYER, PLAYER),
        (["*"], OTHER, "*"),
        ([OTHER, PLAYER], PLAYER, PLAYER),
    ],
)
async def test_only_configured_origins_get_cors_headers(
    make_config: Callable[..., Config],
    start_vidproxy: Callable[[Config], Awaitable[Client]],
    configured: list[str],
    origin: str,
    allowed: str | None,
) -> None:
    client = await start_vidproxy(make_config("fs", server={"cors_origins": configured}))
    await put(client)
    response = await client.get(f"/videos/{KEY}", headers={"Origin": origin})
    assert await response.read() == BODY  # served either way: the browser decides
    assert response.headers.get("Access-Control-Allow-Origin") == allowed
    preflight = await client.options(f"/videos/{KEY}", headers={**PREFLIGHT, "Origin": origin})
    if allowed is None:
        assert preflight.status == 403
        assert (await preflight.json())["error"] == "origin_not_allowed"
    else:
        assert preflight.status == 204
        assert preflight.headers["Access-Control-Allow-Origin"] == allowed
    # "*" answers the same to everyone, so nothing varies by Origin.
    assert ("origin" in header_list(response.headers.get("Vary"))) == (configured != ["*"])


async def test_without_cors_origins_no_cors_headers_and_preflights_say_why(
    make_config: Callable[..., Config], start_vidproxy: Callable[[Config], Awaitable[Client]]
) -> None:
    client = await start_vidproxy(make_config("fs"))
    await put(client)
    response = await client.get(f"/videos/{KEY}", headers={"Origin": PLAYER})
    assert await response.read() == BODY
    assert not [name for name in response.headers if name.lower().startswith("access-control")]
    assert "Vary" not in response.headers
    preflight = await client.options(f"/videos/{KEY}", headers=PREFLIGHT)
    assert preflight.status == 403
    message = (await preflight.json())["message"]
    assert PLAYER in message and "server.cors_origins" in message


async def test_a_preflight_for_no_route_is_404_and_plain_options_is_405(
    make_config: Callable[..., Config], start_vidproxy: Callable[[Config], Awaitable[Client]]
) -> None:
    client = await start_vidproxy(make_config("fs", server={"cors_origins": ["*"]}))
    nothing = await client.options("/nowhere", headers=PREFLIGHT)
    assert (nothing.status, (await nothing.json())["error"]) == (404, "not_found")
    plain = await client.options(f"/videos/{KEY}")  # not a preflight: no Origin
    assert plain.status == 405
    assert json.loads(await plain.read())["error"] == "method_not_allowed"


@pytest.mark.parametrize(
    "origin", ["https://player.example/", "https://player.example/app", "player.example", ""]
)
def test_an_origin_that_is_no_origin_stops_the_start(origin: str) -> None:
    with pytest.raises(ConfigError, match=r"server\.cors_origins"):
        load_config(None, env={}, overrides={"server": {"cors_origins": [origin]}})
