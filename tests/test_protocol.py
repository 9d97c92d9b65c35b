"""What aiohttp answers itself, in vidproxy's JSON: a handler that fails past the
error middleware (here: an app with none), over the test server that runs
production's runner. The parser's refusals are in test_limits.py. Then the
aiohttp internals that web/protocol.py relies on, each pinned (the connection
ones are in test_connections.py)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web, web_app
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.streams import StreamReader
from aiohttp.test_utils import make_mocked_request

from vidproxy.web.errors import from_aiohttp_answer
from vidproxy.web.protocol import (
    JsonErrorRunner,
    StoreFileResponse,
    WrongSize,
    forget_middleware_chains,
    forgive_finished_body,
    production_test_server,
)

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


# ---- the aiohttp internals protocol.py relies on (checked against 3.14.5) ----------

LAST_MODIFIED = datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)
STORE_HEADERS = {"ETag": '"from-the-store"', "Last-Modified": format_datetime(LAST_MODIFIED, True)}


def test_aiohttp_internals_file_response_make_response_opens_and_stats(tmp_path: Path) -> None:
    # StoreFileResponse checks the size inside _make_response: aiohttp's thread,
    # with the file it opened (result[1]) and that file's fstat (result[2]).
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"0123456789")
    params = list(inspect.signature(web.FileResponse._make_response).parameters)
    assert params == ["self", "request", "accept_encoding"]
    # And _sendfile, whose file position after it says what the socket took
    # (tests/test_sent_bytes.py measures that end to end).
    params = list(inspect.signature(web.FileResponse._sendfile).parameters)
    assert params == ["self", "request", "fobj", "offset", "count"]
    result = web.FileResponse(path)._make_response(make_mocked_request("GET", "/"), "")
    try:
        assert len(result) == 4 and result[2].st_size == 10
        assert result[1].read() == b"0123456789"
    finally:
        result[1].close()


async def test_aiohttp_internals_file_response_sets_its_validators_through_the_setters(
    tmp_path: Path, aiohttp_client: Callable[..., Any]
) -> None:
    # FileResponse.prepare assigns self.etag and self.last_modified from the file;
    # StoreFileResponse's setters ignore them. Were aiohttp to write the headers
    # another way, the file's mtime-size tag would show here.
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"0123456789")

    async def whole(request: web.Request) -> web.StreamResponse:
        return StoreFileResponse(path, 10, headers=STORE_HEADERS)

    async def wrong_size(request: web.Request) -> web.StreamResponse:
        try:
            await StoreFileResponse(path, 11, headers=STORE_HEADERS).prepare(request)
        except WrongSize as exc:
            return web.Response(text=f"found {exc.found}")
        return web.Response(text="sent")

    app = web.Application()
    app.router.add_get("/whole", whole)
    app.router.add_get("/wrong", wrong_size)
    client = await aiohttp_client(app)
    response = await client.get("/whole")
    assert (response.status, await response.read()) == (200, b"0123456789")
    assert response.headers["ETag"] == STORE_HEADERS["ETag"]
    assert response.headers["Last-Modified"] == STORE_HEADERS["Last-Modified"]
    assert await (await client.get("/wrong")).text() == "found 10"


async def test_aiohttp_internals_a_finished_body_can_be_forgiven_its_reset() -> None:
    # aiohttp poisons a complete body with the reset that followed it; clearing
    # StreamReader._exception gives back the buffered rest (web.body).
    loop = asyncio.get_running_loop()
    content = StreamReader(BaseProtocol(loop), 2**16, loop=loop)
    content.feed_data(b"the last bytes")
    content.feed_eof()
    content.set_exception(ConnectionResetError("reset after the terminator"))
    with pytest.raises(ConnectionResetError):
        content.read_nowait()
    forgive_finished_body(content)
    assert content.is_eof() and content.read_nowait() == b"the last bytes"


async def test_aiohttp_internals_the_middleware_cache_can_be_emptied(
    aiohttp_client: Callable[..., Any],
) -> None:
    # aiohttp caches a chain for each handler of an app that has middlewares.
    @web.middleware
    async def passing(request: web.Request, handler: Any) -> web.StreamResponse:
        return await handler(request)  # type: ignore[no-any-return]

    async def ok(request: web.Request) -> web.StreamResponse:
        return web.Response()

    app = web.Application(middlewares=[passing])
    app.router.add_get("/", ok)
    client = await aiohttp_client(app)
    assert (await client.get("/")).status == 200
    assert web_app._cached_build_middleware.cache_info().currsize > 0
    forget_middleware_chains()
    assert web_app._cached_build_middleware.cache_info().currsize == 0


async def test_aiohttp_internals_the_test_server_runs_on_productions_runner(
    aiohttp_client: Callable[..., Any],
) -> None:
    # TestServer.start_server makes its runner with _make_runner(handler_cancellation=True).
    server = production_test_server(web.Application())
    await aiohttp_client(server)
    assert isinstance(server.runner, JsonErrorRunner)
    assert server.runner.server is not None
    assert server.runner.server.handler_cancellation is False
