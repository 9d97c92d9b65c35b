"""The command-line client against a real vidproxy (fs backend) on loopback.

Most tests run the parsed command in this event loop with in-memory stdio;
the piping tests run ``python -m vidproxy.client`` as a process with real pipes.
"""

from __future__ import annotations

import asyncio
import io
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestClient, TestServer
from conftest import free_port

from vidproxy.client import build_parser
from vidproxy.client.commands import Streams, run_client_async
from vidproxy.client.progress import Progress, render
from vidproxy.client.transfer import etag_path
from vidproxy.config import Config

MiB = 1024 * 1024
PROCESS_TIMEOUT = 30.0  # seconds for one client process


@dataclass
class Run:
    code: int
    out: bytes
    err: str

    @property
    def lines(self) -> list[str]:
        return self.out.decode().splitlines()


Cli = Callable[..., Any]


@pytest.fixture
async def server(
    make_config: Callable[..., Config], start_vidproxy: Callable[..., Any]
) -> TestClient[Any, Any]:
    return await start_vidproxy(make_config("fs"))


@pytest.fixture
def base_url(server: TestClient[Any, Any]) -> str:
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
def cli(base_url: str) -> Cli:
    """Run one client command in this loop, against ``server`` unless --url is given."""

    async def run(*argv: str, stdin: bytes = b"", url: str | None = None) -> Run:
        args = build_parser().parse_args([*argv, "--url", url or base_url])
        out, err = io.BytesIO(), io.StringIO()
        code = await run_client_async(args, Streams(io.BytesIO(stdin), out, err))
        return Run(code, out.getvalue(), err.getvalue())

    return run


def has_etag_beside(path: Path) -> bool:
    """Whether a download left the object's ETag beside ``path``, to resume from."""
    return etag_path(path).is_file()


def random_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


async def test_upload_then_download_gives_the_same_bytes(cli: Cli, tmp_path: Path) -> None:
    first = random_file(tmp_path / "one.bin", 3 * MiB + 17)
    second = random_file(tmp_path / "two.bin", 1000)

    up = await cli("upload", str(first), str(second), "--prefix", "rt/")
    assert (up.code, up.lines, up.err) == (0, ["rt/one.bin", "rt/two.bin"], "")

    for key, original in [("rt/one.bin", first), ("rt/two.bin", second)]:
        out = tmp_path / f"copy-{original.name}"
        down = await cli("download", key, "-o", str(out))
        assert (down.code, down.err) == (0, "")
        assert out.read_bytes() == original.read_bytes()
        assert not has_etag_beside(out)


async def test_upload_with_key_and_content_type(
    cli: Cli, tmp_path: Path, server: TestClient[Any, Any]
) -> None:
    clip = random_file(tmp_path / "clip", 5000)
    up = await cli("upload", str(clip), "--key", "named/x.mp4", "--content-type", "video/webm")
    assert (up.code, up.lines) == (0, ["named/x.mp4"])
    response = await server.head("/videos/named/x.mp4")
    assert response.headers["Content-Type"] == "video/webm"


async def test_cut_off_download_resumes_where_it_stopped(
    cli: Cli,
    tmp_path: Path,
    base_url: str,
    aiohttp_client: Callable[..., Any],
    wait_until: Callable[..., Awaitable[None]],
) -> None:
    original = random_file(tmp_path / "v.bin", 4 * MiB)
    assert (await cli("upload", str(original), "--key", "v.bin")).code == 0
    out = tmp_path / "out.bin"
    hang_up = asyncio.Event()
    proxy = await aiohttp_client(TestServer(cutting_proxy(base_url, MiB, hang_up)))

    download = asyncio.create_task(
        cli("download", "v.bin", "-o", str(out), url=str(proxy.make_url("")))
    )

    async def saved_what_was_sent() -> bool:
        return out.is_file() and out.stat().st_size >= MiB

    # Cut only once the client has written the bytes: aiohttp's client drops
    # what it has buffered but not yet read when the connection fails.
    try:
        await wait_until(saved_what_was_sent, "the first MiB to reach the file")
    finally:
        hang_up.set()
    cut = await download
    assert cut.code == 4, cut.err
    assert out.stat().st_size == MiB
    assert has_etag_beside(out)

    resumed = await cli("download", "v.bin", "-o", str(out))
    assert (resumed.code, resumed.err) == (0, f"{out}: resumed at {MiB} bytes\n")
    assert out.read_bytes() == original.read_bytes()
    assert not has_etag_beside(out)


async def test_truncated_file_resumes_with_continue(cli: Cli, tmp_path: Path) -> None:
    original = random_file(tmp_path / "v.bin", 2 * MiB + 5)
    assert (await cli("upload", str(original))).code == 0
    out = tmp_path / "out.bin"
    out.write_bytes(original.read_bytes()[:MiB])

    resumed = await cli("download", "v.bin", "-o", str(out), "-c")
    assert (resumed.code, resumed.err) == (0, f"{out}: resumed at {MiB} bytes\n")
    assert out.read_bytes() == original.read_bytes()

    again = await cli("download", "v.bin", "-o", str(out), "-c")
    assert (again.code, again.err) == (0, f"{out}: already complete\n")


async def test_partial_of_an_older_version_starts_over(
    cli: Cli, tmp_path: Path, server: TestClient[Any, Any]
) -> None:
    old = random_file(tmp_path / "old.bin", MiB)
    new = random_file(tmp_path / "new.bin", MiB)
    assert (await cli("upload", str(old), "--key", "k.bin")).code == 0
    old_etag = (await server.head("/videos/k.bin")).headers["ETag"]
    assert (await cli("upload", str(new), "--key", "k.bin")).code == 0
    out = tmp_path / "out.bin"
    out.write_bytes(old.read_bytes()[: MiB // 2])
    etag_path(out).write_text(old_etag)

    result = await cli("download", "k.bin", "-o", str(out))

    assert result.code == 0, result.err
    assert out.read_bytes() == new.read_bytes()


async def test_resumed_bytes_that_do_not_match_are_refused(cli: Cli, tmp_path: Path) -> None:
    original = random_file(tmp_path / "v.bin", MiB)
    assert (await cli("upload", str(original))).code == 0
    out = random_file(tmp_path / "out.bin", 1000)  # not a prefix of the object

    result = await cli("download", "v.bin", "-o", str(out), "-c")

    assert result.code == 1
    assert "X-Content-SHA256" in result.err
    assert not out.exists()


async def test_ls_follows_pages(cli: Cli, tmp_path: Path) -> None:
    small = random_file(tmp_path / "s.bin", 10)
    keys = [f"ls/{n}.webm" for n in range(5)]
    for key in [*keys, "other.webm"]:
        assert (await cli("upload", str(small), "--key", key)).code == 0

    listed = await cli("ls", "ls/", "--page-size", "2")

    assert listed.code == 0
    assert listed.lines == [f"{key}\t10\tvideo/webm" for key in keys]


async def test_rm_deletes_and_missing_keys_exit_3(cli: Cli, tmp_path: Path) -> None:
    small = random_file(tmp_path / "s.bin", 10)
    assert (await cli("upload", str(small), "--key", "gone.bin")).code == 0

    assert (await cli("rm", "gone.bin")).code == 0

    out = tmp_path / "out.bin"
    missing = await cli("download", "gone.bin", "-o", str(out))
    assert missing.code == 3
    assert "HTTP 404 not_found" in missing.err
    assert not out.exists()
    assert (await cli("ls")).lines == []
    assert (await cli("rm", "gone.bin")).code == 0  # DELETE is idempotent


async def test_connection_refused_exits_4(cli: Cli) -> None:
    result = await cli("ls", url=f"http://127.0.0.1:{free_port()}")
    assert result.code == 4
    assert "cannot connect" in result.err


async def test_server_errors_exit_1_with_the_servers_message(cli: Cli, tmp_path: Path) -> None:
    small = random_file(tmp_path / "s.bin", 10)
    result = await cli("upload", str(small), "--key", "a//b")
    assert result.code == 1
    assert result.err.startswith("vidproxy upload: HTTP 400 invalid_key: ")


@pytest.mark.parametrize(
    ("files", "extra", "message"),
    [
        (["a.bin", "b.bin"], ["--key", "k"], "--key names one object"),
        (["a.bin", "missing.bin"], [], "missing.bin: no such file"),
        (["-", "-"], [], "stdin ('-') can be uploaded once"),
    ],
)
async def test_usage_errors_exit_2_before_anything_is_sent(
    cli: Cli, tmp_path: Path, files: list[str], extra: list[str], message: str
) -> None:
    (tmp_path / "a.bin").write_bytes(b"a")
    (tmp_path / "b.bin").write_bytes(b"b")
    paths = [name if name == "-" else str(tmp_path / name) for name in files]
    result = await cli("upload", *paths, *extra)
    assert (result.code, result.out) == (2, b"")
    assert message in result.err
    assert (await cli("ls")).lines == []


def test_bad_arguments_exit_2() -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["ls", "--page-size", "0"])
    assert exit_info.value.code == 2


async def test_url_and_token_come_from_the_environment(
    server: TestClient[Any, Any], base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIDPROXY_URL", base_url)
    monkeypatch.setenv("VIDPROXY_TOKEN", "secret")
    args = build_parser().parse_args(["ls"])
    streams = Streams(io.BytesIO(), io.BytesIO(), io.StringIO())
    assert await run_client_async(args, streams) == 0


async def test_token_is_sent_as_bearer(
    make_config: Callable[..., Config], start_vidproxy: Callable[..., Any], tmp_path: Path
) -> None:
    auth = {"write_tokens": ["writer"], "read_tokens": ["reader"]}
    guarded = await start_vidproxy(make_config("fs", auth=auth))
    url = str(guarded.make_url("")).rstrip("/")
    small = random_file(tmp_path / "s.webm", 10)

    async def run(*argv: str) -> tuple[int, str]:
        args = build_parser().parse_args([*argv, "--url", url])
        err = io.StringIO()
        code = await run_client_async(args, Streams(io.BytesIO(), io.BytesIO(), err))
        return code, err.getvalue()

    code, err = await run("ls")
    assert (code, "HTTP 401 unauthorized" in err, "set $VIDPROXY_TOKEN" in err) == (1, True, True)
    code, err = await run("upload", str(small), "--token", "reader")
    assert (code, "HTTP 403 forbidden" in err) == (1, True)
    assert await run("upload", str(small), "--token", "writer") == (0, "")
    assert await run("ls", "--token", "reader") == (0, "")


# ---- as a process, with real pipes --------------------------------------------


async def run_process(base_url: str, *argv: str, stdin: bytes = b"") -> Run:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "vidproxy.client",
        *argv,
        "--url",
        base_url,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(PROCESS_TIMEOUT):
            out, err = await proc.communicate(stdin)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return Run(proc.returncode or 0, out, err.decode())


async def test_stdin_upload_and_stdout_download(base_url: str) -> None:
    data = os.urandom(3 * MiB + 1)

    named = await run_process(base_url, "upload", "-", "--key", "piped.bin", stdin=data)
    assert (named.code, named.lines, named.err) == (0, ["piped.bin"], "")
    unnamed = await run_process(base_url, "upload", "-", stdin=data)
    assert unnamed.code == 0
    (server_key,) = unnamed.lines
    assert len(server_key) == 26  # a ULID

    for key in ("piped.bin", server_key):
        down = await run_process(base_url, "download", key, "-o", "-")
        assert (down.code, down.err) == (0, "")
        assert down.out == data


async def test_process_exit_codes(base_url: str) -> None:
    assert (await run_process(base_url, "download", "nope", "-o", "-")).code == 3
    assert (await run_process(f"http://127.0.0.1:{free_port()}", "ls")).code == 4
    assert (await run_process(base_url, "frobnicate")).code == 2


# ---- the progress bar ------------------------------------------------------------


def test_render_shows_percent_speed_and_eta() -> None:
    line = render("clip.webm", 25 * 10**6, 100 * 10**6, 5 * 10**6, 80)
    assert line.startswith("clip.webm  [")
    assert line.endswith("]   25%  25.0/100.0 MB  5.0 MB/s  ETA 0:15")
    assert len(line) == 80
    assert render("stdin", 3 * 10**6, None, 10**6, 80) == "stdin  3.0 MB  1.0 MB/s"


def test_progress_draws_only_when_enabled() -> None:
    ticks = iter([0.0, 1.0, 2.0, 3.0])
    shown = io.StringIO()
    bar = Progress("x", 100, shown, enabled=True, clock=lambda: next(ticks))
    bar.advance(50)
    bar.finish()
    first, final = shown.getvalue().split("\r")[1:]
    assert "50%" in first
    assert final.endswith("\n")

    hidden = io.StringIO()
    quiet = Progress("x", 100, hidden, enabled=False)
    quiet.advance(100)
    quiet.finish()
    assert hidden.getvalue() == ""


# ---- a proxy that cuts a download off --------------------------------------------


def cutting_proxy(upstream: str, cut_after: int, hang_up: asyncio.Event) -> web.Application:
    """Pass GETs to ``upstream``, but stop after ``cut_after`` body bytes and hang
    up when ``hang_up`` is set."""
    passed = ("Range", "If-Range")
    kept = ("Content-Type", "Content-Length", "Content-Range", "ETag", "X-Content-SHA256")

    async def get(request: web.Request) -> web.StreamResponse:
        headers = {h: request.headers[h] for h in passed if h in request.headers}
        async with request.app[SESSION].get(upstream + request.path_qs, headers=headers) as up:
            response = web.StreamResponse(
                status=up.status, headers={h: up.headers[h] for h in kept if h in up.headers}
            )
            await response.prepare(request)
            sent = 0
            while sent < cut_after:
                chunk = await up.content.read(min(64 * 1024, cut_after - sent))
                if not chunk:
                    break
                await response.write(chunk)
                sent += len(chunk)
            await hang_up.wait()
            assert request.transport is not None
            request.transport.close()
            raise ConnectionResetError("cut off on purpose")

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        async with ClientSession(auto_decompress=False) as session:
            app[SESSION] = session
            yield

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_get("/videos/{key:.+}", get)
    return app


SESSION = web.AppKey("session", ClientSession)
