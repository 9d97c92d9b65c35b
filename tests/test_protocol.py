"""What aiohttp answers itself, in vidproxy's JSON: a handler that fails past the
error middleware (here: an app with none), over the test server that runs
production's runner. The parser's refusals are in test_limits.py."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong

from vidproxy.web.errors import from_aiohttp_answer

SECONDS = 5.0


async def crash(request: web.Request) -> web.StreamResponse:
    raise RuntimeError("a bug with a secret in it")


async def time_out(request: web.Request) -> web.StreamResponse:
    raise TimeoutError


async def crash_midway(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse()
    await response.prepare(request)
    await response.write(b"partial")
    raise RuntimeError("too late to answer")


@pytest.fixture
async def bare(start_vidproxy: Callable[..., Any]) -> Any:
    app = web.Application()
    app.router.add_get("/crash", crash)
    app.router.add_get("/timeout", time_out)
    app.router.add_get("/midway", crash_midway)
    return await start_vidproxy(app)


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [("/crash", 500, "internal_error"), ("/timeout", 504, "gateway_timeout")],
)
async def test_a_failure_past_the_middleware_is_json_and_closes(
    bare: Any, path: str, status: int, code: str
) -> None:
    response = await bare.get(path)
    assert response.status == status
    assert response.content_type == "application/json"
    assert response.headers["Connection"] == "close"
    body = await response.json()
    assert body["error"] == code and "secret" not in body["message"]


async def test_a_failure_after_the_answer_started_only_cuts_it_short(bare: Any) -> None:
    reader, writer = await asyncio.open_connection(bare.host, bare.port)
    try:
        writer.write(b"GET /midway HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(SECONDS):
            received = await reader.read()  # until the server closes
    finally:
        writer.close()
    assert received.startswith(b"HTTP/1.1 200") and b"partial" in received
    assert b'"error"' not in received


def answer(status: int, exc: BaseException | None) -> tuple[int, str, str]:
    error = from_aiohttp_answer(status, exc)
    return error.status, error.code, error.message


def test_parser_errors_get_a_fixed_message_whatever_they_quote() -> None:
    assert answer(400, LineTooLong(b"a" * 100, 8190)) == (
        400,
        "malformed_request",
        "request line or header line too long",
    )
    assert answer(400, BadHttpMessage("Duplicate Content-Length")) == (
        400,
        "malformed_request",
        "malformed HTTP request",
    )
    assert answer(502, None) == (502, "http_error", "the request failed")
