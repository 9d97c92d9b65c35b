"""The command-line client against a real vidproxy (fs backend) on loopback.

Most tests run the parsed command in this event loop with in-memory stdio;
the piping tests run ``python -m vidproxy.client`` as a process with real pipes.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import pty
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestClient, TestServer
from conftest import free_port
from yarl import URL

from vidproxy.client import build_parser
from vidproxy.client.commands import Streams, run_client_async
from vidproxy.client.progress import Progress, render
from vidproxy.client.resume import UploadIdentity, save_upload_url
from vidproxy.client.transfer import etag_path
from vidproxy.client.tus import TUS_VERSION, encode_metadata, resolve_location
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


@pytest.fixture(autouse=True)
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The client's XDG_CACHE_HOME (where an upload's resume state goes), for this
    test alone; client processes inherit it."""
    path = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(path))
    return path


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


# ---- conventions, as a process -------------------------------------------------


async def test_ls_json_is_an_array_with_one_object_per_line(base_url: str, tmp_path: Path) -> None:
    empty = await run_process(base_url, "ls", "--json")
    assert (empty.code, json.loads(empty.out), empty.err) == (0, [], "")
    small = random_file(tmp_path / "s.webm", 10)
    for key in ("j/a.webm", "j/b.webm", "j/c.webm"):
        assert (await run_process(base_url, "upload", str(small), "--key", key)).code == 0

    listed = await run_process(base_url, "ls", "j/", "--json", "--page-size", "2")

    assert (listed.code, listed.err) == (0, "")
    items = json.loads(listed.out)
    assert [(i["key"], i["size"], i["content_type"]) for i in items] == [
        (key, 10, "video/webm") for key in ("j/a.webm", "j/b.webm", "j/c.webm")
    ]
    first, *objects, last = listed.lines
    assert (first, last) == ("[", "]")
    assert [json.loads(line.removesuffix(",")) for line in objects] == items


async def test_quiet_is_offered_only_where_a_bar_is_drawn(base_url: str, tmp_path: Path) -> None:
    small = random_file(tmp_path / "s.bin", 10)
    assert (await run_process(base_url, "upload", str(small), "-q")).code == 0
    assert (await run_process(base_url, "download", "s.bin", "-o", "-", "-q")).code == 0
    for argv in (("ls", "-q"), ("rm", "s.bin", "-q")):
        refused = await run_process(base_url, *argv)
        assert refused.code == 2
        # The command's own usage and name, not the top-level usage.
        assert refused.err.startswith(f"usage: vidproxy {argv[0]} [-h] [--url URL]")
        assert f"vidproxy {argv[0]}: error: unrecognized arguments: -q" in refused.err


@pytest.mark.parametrize("path", ["/videos", "/videos/", "/vp/videos", "/videos/demo"])
async def test_a_url_naming_the_collection_is_refused_before_anything_is_sent(
    base_url: str, tmp_path: Path, path: str
) -> None:
    small = random_file(tmp_path / "s.bin", 10)
    result = await run_process(base_url + path, "upload", str(small))
    assert (result.code, result.out) == (2, b"")
    base = base_url + path.split("/videos")[0]
    assert result.err == (
        "vidproxy upload: --url is vidproxy's base URL, without /videos (the client adds "
        f"/videos/KEY itself): use {base}\n"
    )
    assert (await run_process(base_url, "ls")).lines == []


async def test_a_base_path_is_kept_as_a_prefix(
    base_url: str, tmp_path: Path, aiohttp_client: Callable[..., Any]
) -> None:
    proxy = await aiohttp_client(TestServer(prefix_proxy(base_url, "/vp")))
    behind = str(proxy.make_url("/vp"))
    original = random_file(tmp_path / "clip.mp4", MiB + 3)

    up = await run_process(behind, "upload", str(original), "--prefix", "p/")
    assert (up.code, up.lines, up.err) == (0, ["p/clip.mp4"], "")
    assert (await run_process(behind, "ls")).lines == [f"p/clip.mp4\t{MiB + 3}\tvideo/mp4"]
    down = await run_process(behind, "download", "p/clip.mp4", "-o", "-")
    assert (down.code, down.out) == (0, original.read_bytes())
    # The server itself got the key without the prefix.
    direct = await run_process(base_url, "download", "p/clip.mp4", "-o", "-")
    assert direct.out == original.read_bytes()


async def test_a_server_without_tus_gets_a_plain_put(
    base_url: str, tmp_path: Path, aiohttp_client: Callable[..., Any], cache_home: Path
) -> None:
    proxy = await aiohttp_client(TestServer(prefix_proxy(base_url, "", without_tus=True)))
    original = random_file(tmp_path / "old.mp4", MiB + 5)

    up = await run_process(str(proxy.make_url("")), "upload", str(original), "--key", "o.mp4")
    assert (up.code, up.lines, up.err) == (0, ["o.mp4"], "")
    down = await run_process(base_url, "download", "o.mp4", "-o", "-")
    assert down.out == original.read_bytes()
    assert not (cache_home / "vidproxy" / "uploads").exists() or not any(
        (cache_home / "vidproxy" / "uploads").iterdir()
    )


async def test_upload_of_a_directory_needs_r_and_keys_its_files_by_path(
    base_url: str, tmp_path: Path
) -> None:
    tree = tmp_path / "tree"
    (tree / "day1").mkdir(parents=True)
    files = {
        "a.mp4": random_file(tree / "a.mp4", 100),
        "day1/b.mp4": random_file(tree / "day1" / "b.mp4", 200),
    }
    refused = await run_process(base_url, "upload", str(tree))
    assert (refused.code, refused.out) == (2, b"")
    assert (
        refused.err == f"vidproxy upload: {tree}: is a directory (-r uploads the files under it)\n"
    )

    up = await run_process(base_url, "upload", "-r", str(tree), "--prefix", "up/")

    assert (up.code, up.lines, up.err) == (0, ["up/a.mp4", "up/day1/b.mp4"], "")
    for name, original in files.items():
        down = await run_process(base_url, "download", f"up/{name}", "-o", "-")
        assert down.out == original.read_bytes()


async def test_download_to_a_pipe_closed_early_exits_0_silently(
    base_url: str, tmp_path: Path
) -> None:
    big = random_file(tmp_path / "big.bin", 8 * MiB)  # far more than a pipe holds
    assert (await run_process(base_url, "upload", str(big))).code == 0
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vidproxy.client", "download", "big.bin", "-o", "-",
        "--url", base_url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    try:
        async with asyncio.timeout(PROCESS_TIMEOUT):
            head = await proc.stdout.readexactly(10)  # as `| head -c 10` does
            proc._transport.get_pipe_transport(1).close()  # type: ignore[attr-defined]
            err = await proc.stderr.read()
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert head == big.read_bytes()[:10]
    assert (code, err) == (0, b"")


async def test_upload_with_its_output_closed_still_uploads_every_file(
    base_url: str, tmp_path: Path
) -> None:
    files = [random_file(tmp_path / f"{n}.bin", 1000) for n in range(3)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vidproxy.client", "upload", *map(str, files),
        "--url", base_url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    proc._transport.get_pipe_transport(1).close()  # type: ignore[attr-defined]
    async with asyncio.timeout(PROCESS_TIMEOUT):
        _, err = await proc.communicate()
    assert (proc.returncode, err) == (0, b"")
    listed = await run_process(base_url, "ls")
    assert [line.split("\t")[0] for line in listed.lines] == ["0.bin", "1.bin", "2.bin"]


# ---- in a terminal: the bar and the lines around it ------------------------------


@dataclass
class Terminal:
    """A client process whose stderr is a pseudo-terminal, so it draws its bar."""

    proc: asyncio.subprocess.Process
    master: int
    output: bytearray

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace")

    async def wait_for(self, needle: str, wait_until: Callable[..., Awaitable[None]]) -> None:
        async def shown() -> bool:
            return needle in self.text

        await wait_until(shown, f"{needle!r} on the terminal", within=PROCESS_TIMEOUT)

    async def finish(self) -> int:
        async with asyncio.timeout(PROCESS_TIMEOUT):
            code = await self.proc.wait()
        await asyncio.sleep(0)  # let the reader take what the process wrote last
        return code


@contextlib.asynccontextmanager
async def in_terminal(*argv: str) -> AsyncIterator[Terminal]:
    master, slave = pty.openpty()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "vidproxy.client", *argv,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=slave,
    )  # fmt: skip
    os.close(slave)
    terminal = Terminal(proc, master, bytearray())

    def read() -> None:
        try:
            terminal.output += os.read(master, 65536)
        except OSError:  # EIO: the process closed its side
            asyncio.get_running_loop().remove_reader(master)

    asyncio.get_running_loop().add_reader(master, read)
    try:
        yield terminal
    finally:
        asyncio.get_running_loop().remove_reader(master)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        read_rest(terminal)
        os.close(master)


def read_rest(terminal: Terminal) -> None:
    os.set_blocking(terminal.master, False)
    with contextlib.suppress(OSError):
        while chunk := os.read(terminal.master, 65536):
            terminal.output += chunk


async def test_ctrl_c_prints_its_message_on_a_line_of_its_own(
    cli: Cli, tmp_path: Path, base_url: str, aiohttp_client: Callable[..., Any],
    wait_until: Callable[..., Awaitable[None]],
) -> None:  # fmt: skip
    original = random_file(tmp_path / "v.bin", 4 * MiB)
    assert (await cli("upload", str(original), "--key", "v.bin")).code == 0
    hang_up = asyncio.Event()
    proxy = await aiohttp_client(TestServer(cutting_proxy(base_url, MiB, hang_up)))
    out = tmp_path / "out.bin"
    try:
        async with in_terminal(
            "download", "v.bin", "-o", str(out), "--url", str(proxy.make_url(""))
        ) as terminal:
            await terminal.wait_for("MB/s", wait_until)  # the bar, stalled after 1 MiB
            terminal.proc.send_signal(signal.SIGINT)
            code = await terminal.finish()
    finally:
        hang_up.set()
    assert code == 130
    bar_line, message = terminal.text.rsplit("\r\n", 2)[:2]
    assert "MB/s" in bar_line
    assert message == "vidproxy download: interrupted"


async def test_resumed_at_is_said_before_the_bar(
    cli: Cli, tmp_path: Path, server: TestClient[Any, Any], base_url: str,
    wait_until: Callable[..., Awaitable[None]],
) -> None:  # fmt: skip
    original = random_file(tmp_path / "v.bin", 2 * MiB)
    assert (await cli("upload", str(original), "--key", "v.bin")).code == 0
    out = tmp_path / "out.bin"
    out.write_bytes(original.read_bytes()[:MiB])
    etag_path(out).write_text((await server.head("/videos/v.bin")).headers["ETag"])

    async with in_terminal("download", "v.bin", "-o", str(out), "--url", base_url) as terminal:
        assert await terminal.finish() == 0
    text = terminal.text
    assert f"{out}: resumed at {MiB} bytes" in text
    assert text.index("resumed at") < text.index("%")  # the bar's first drawing
    assert text.rstrip().endswith("ETA 0:00")  # the final bar is the last thing drawn
    assert out.read_bytes() == original.read_bytes()


async def begin_tus_upload(server: TestClient[Any, Any], data: bytes, key: str, stored: int) -> str:
    """A tus upload of ``data`` to ``key`` with its first ``stored`` bytes sent,
    as a cut-off run of ``vidproxy upload`` leaves it; its URL."""
    tus = {"Tus-Resumable": TUS_VERSION}
    size = len(data)
    metadata = encode_metadata({"key": key})
    created = await server.post(
        "/uploads", headers={**tus, "Upload-Length": str(size), "Upload-Metadata": metadata}
    )
    assert created.status == 201
    location = created.headers["Location"]
    patch_headers = {**tus, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
    patched = await server.patch(location, headers=patch_headers, data=data[:stored])
    assert (patched.status, patched.headers["Upload-Offset"]) == (204, str(stored))
    return str(server.make_url(location))


async def test_an_upload_begun_earlier_resumes_and_says_so_before_the_bar(
    tmp_path: Path, server: TestClient[Any, Any], base_url: str, cache_home: Path
) -> None:
    original = random_file(tmp_path / "v.bin", 3 * MiB)
    url = await begin_tus_upload(server, original.read_bytes(), "v.bin", MiB)
    identity = UploadIdentity.of(str(original), base_url, "v.bin", None)
    save_upload_url(identity, url)

    async with in_terminal("upload", str(original), "--key", "v.bin", "--url", base_url) as term:
        assert await term.finish() == 0
    text = term.text
    assert f"{original}: resumed at {MiB} bytes" in text
    assert text.index("resumed at") < text.index("%")  # the bar's first drawing
    assert "3.1/3.1 MB" in text.rstrip().rsplit("\r", 1)[-1]  # the final bar: all of it
    assert (await (await server.get("/videos/v.bin")).read()) == original.read_bytes()
    assert list((cache_home / "vidproxy" / "uploads").iterdir()) == []  # forgotten when done


async def test_an_upload_the_server_no_longer_has_starts_over(
    cli: Cli, tmp_path: Path, server: TestClient[Any, Any], base_url: str
) -> None:
    original = random_file(tmp_path / "v.bin", 2 * MiB)
    identity = UploadIdentity.of(str(original), base_url, "v.bin", None)
    save_upload_url(identity, base_url + "/uploads/01ARZ3NDEKTSV4RRFFQ69G5FAV")

    up = await cli("upload", str(original), "--key", "v.bin")
    assert (up.code, up.lines) == (0, ["v.bin"])
    assert up.err == f"{original}: the earlier upload is gone; started over\n"
    assert (await (await server.get("/videos/v.bin")).read()) == original.read_bytes()


async def test_an_empty_file_is_uploaded(cli: Cli, tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    up = await cli("upload", str(empty), "--key", "e.mp4")
    assert (up.code, up.lines, up.err) == (0, ["e.mp4"], "")
    down = await cli("download", "e.mp4", "-o", "-")
    assert (down.code, down.out) == (0, b"")


@pytest.mark.parametrize(
    ("base", "location", "expected"),
    [
        ("http://h:1", "/uploads/A", "http://h:1/uploads/A"),
        ("http://h:1/vp", "/uploads/A", "http://h:1/vp/uploads/A"),
        ("http://h:1/vp", "/vp/uploads/A", "http://h:1/vp/uploads/A"),
        ("http://h:1/vp", "A", "http://h:1/vp/A"),  # RFC 3986 §5.2
        ("http://h:1/vp", "http://other:2/uploads/A", "http://other:2/uploads/A"),
    ],
)
def test_an_uploads_location_is_resolved_against_the_post(
    base: str, location: str, expected: str
) -> None:
    # Relative to the POST's URL (tus 1.0); --url's path prefix kept for a
    # vidproxy behind a reverse proxy, which answers /uploads/ID.
    post = URL(base + "/uploads")
    assert str(resolve_location(URL(base), post, location)) == expected


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


async def no_uploads(request: web.Request) -> web.Response:
    return web.json_response({"error": "not_found", "message": "no such route"}, status=404)


TUS_ASKED = ("Tus-Resumable", "Upload-Length", "Upload-Metadata", "Upload-Offset")
TUS_ANSWERED = ("Tus-Resumable", "Location", "Upload-Offset", "Upload-Length", "X-Video-Key")


def prefix_proxy(upstream: str, prefix: str, without_tus: bool = False) -> web.Application:
    """A reverse proxy that serves ``upstream`` under ``prefix`` (``/vp/videos/x``
    goes on as ``/videos/x``), bodies streamed both ways; ``without_tus``: 404
    for ``/uploads``, as a vidproxy from before tus answers."""
    passed = ("Content-Type", "Content-Length", "Range", "If-Range", "Authorization", *TUS_ASKED)
    kept = ("Content-Type", "Content-Length", "Content-Range", "ETag", "X-Content-SHA256")
    kept += TUS_ANSWERED

    async def forward(request: web.Request) -> web.StreamResponse:
        headers = {h: request.headers[h] for h in passed if h in request.headers}
        target = upstream + request.raw_path.removeprefix(prefix)
        body = request.content.iter_chunked(64 * 1024) if request.can_read_body else None
        session = request.app[SESSION]
        upstream_request = session.request(
            request.method, URL(target, encoded=True), headers=headers, data=body,
            skip_auto_headers=("Content-Type",),
        )  # fmt: skip
        async with upstream_request as up:
            response = web.StreamResponse(
                status=up.status, headers={h: up.headers[h] for h in kept if h in up.headers}
            )
            await response.prepare(request)
            async for chunk in up.content.iter_chunked(64 * 1024):
                await response.write(chunk)
            await response.write_eof()
            return response

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        async with ClientSession(auto_decompress=False) as session:
            app[SESSION] = session
            yield

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    if without_tus:
        app.router.add_route("*", prefix + "/uploads", no_uploads)
    app.router.add_route("*", prefix + "/{tail:.*}", forward)
    return app
