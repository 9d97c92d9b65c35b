"""The client subcommands, their arguments, and the one place that turns a
``ClientError`` into a message on stderr and an exit code."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, TextIO

from .api import Api, key_path, open_api
from .errors import ClientError, OutputClosed, ServerError, UsageError
from .progress import Progress
from .resume import UploadIdentity
from .transfer import download_to_file, download_to_stream, local, upload
from .tus import NoTusServer, tus_upload

DEFAULT_URL = "http://127.0.0.1:8080"
URL_ENV = "VIDPROXY_URL"
TOKEN_ENV = "VIDPROXY_TOKEN"
STDIO = "-"
MAX_PAGE_SIZE = 1000  # the server's largest page
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
CLIENT_COMMANDS = frozenset({"upload", "download", "ls", "rm"})
CLIENT_ENV_VARS = (URL_ENV, TOKEN_ENV)


@dataclass
class Streams:
    stdin: BinaryIO
    stdout: BinaryIO
    stderr: TextIO
    show_progress: bool = False
    # The bar drawn last: a message that follows must start on a line of its own.
    _bar: Progress | None = field(default=None, init=False, repr=False)

    @classmethod
    def system(cls, quiet: bool = False) -> Streams:
        show = sys.stderr.isatty() and not quiet
        return cls(sys.stdin.buffer, sys.stdout.buffer, sys.stderr, show)

    def progress(self, label: str) -> Callable[[int | None], Progress]:
        def make(total: int | None) -> Progress:
            self._bar = Progress(label, total, self.stderr, self.show_progress)
            return self._bar

        return make

    def line(self, text: str) -> None:
        try:
            self.stdout.write(text.encode() + b"\n")
            self.stdout.flush()
        except BrokenPipeError:
            raise OutputClosed() from None

    def note(self, text: str) -> None:
        self.end_line()
        print(text, file=self.stderr, flush=True)

    def end_line(self) -> None:
        """End the bar's line, if one is drawn, so what follows starts afresh."""
        if self._bar is not None:
            self._bar.end_line()

    def discard_output(self) -> None:
        """After the reader closed stdout: point it at /dev/null, so flushing what
        is still buffered at exit fails neither loudly nor with exit code 120."""
        try:
            fd = self.stdout.fileno()
        except (OSError, ValueError):
            return  # not a file (a test's BytesIO)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)


Command = Callable[[Api, argparse.Namespace, Streams], Awaitable[None]]


# ---- the commands ----------------------------------------------------------------


async def upload_command(api: Api, args: argparse.Namespace, io: Streams) -> None:
    for name, key in _upload_plan(args):
        if name == STDIO:
            stored = await upload(api, io.stdin, None, key, args.content_type, _bar(io, "stdin"))
        else:
            assert key is not None  # a file's key is always known: --key, or prefix + name
            stored = {"key": await _upload_file(api, name, key, args.content_type, io)}
        try:
            io.line(stored["key"])
        except OutputClosed:
            io.discard_output()  # the keys are a report: the uploads go on, unprinted


async def _upload_file(api: Api, name: str, key: str, content_type: str | None, io: Streams) -> str:
    """Over tus, resuming what an earlier run of the same command began; a plain
    PUT for an empty file (nothing to resume) or a server without ``/uploads``."""
    identity = await local(name, UploadIdentity.of, name, str(api.base), key, content_type)
    if identity.size > 0:
        try:
            return await tus_upload(api, name, identity, _bar(io, name, identity.size), io.note)
        except NoTusServer:
            pass
    source, size = await local(name, _open_input, name)
    try:
        stored = await upload(api, source, size, key, content_type, _bar(io, name, size))
    finally:
        source.close()
    return str(stored["key"])


def _open_input(name: str) -> tuple[BinaryIO, int]:
    source = open(name, "rb")  # noqa: SIM115 -- the caller closes it
    return source, os.fstat(source.fileno()).st_size


def _bar(io: Streams, label: str, total: int | None = None) -> Progress:
    return io.progress(label)(total)


def _upload_plan(args: argparse.Namespace) -> list[tuple[str, str | None]]:
    """(file, key) pairs, checked before anything is sent. A file's key is
    ``--prefix`` + its name; with ``-r``, a directory's files get ``--prefix`` +
    their path inside it (as ``aws s3 cp --recursive``); stdin without ``--key``
    lets the server pick one."""
    files: list[str] = args.files
    if args.key is not None and (len(files) > 1 or args.recursive):
        raise UsageError("--key names one object: give one FILE with it, without -r")
    if files.count(STDIO) > 1:
        raise UsageError("stdin ('-') can be uploaded once")
    plan: list[tuple[str, str | None]] = []
    for name in files:
        if name == STDIO:
            plan.append((name, args.key))
        elif Path(name).is_dir():
            plan += _directory_plan(name, args.prefix, args.recursive)
        elif Path(name).is_file():
            plan.append((name, args.key if args.key is not None else args.prefix + Path(name).name))
        else:
            raise UsageError(f"{name}: no such file")
    return plan


def _directory_plan(name: str, prefix: str, recursive: bool) -> list[tuple[str, str | None]]:
    if not recursive:
        raise UsageError(f"{name}: is a directory (-r uploads the files under it)")
    root = Path(name)
    # rglob does not descend into symlinked directories, so a link loop ends.
    files = sorted(path for path in root.rglob("*") if path.is_file())
    if not files:
        raise UsageError(f"{name}: holds no files")
    return [(str(path), prefix + path.relative_to(root).as_posix()) for path in files]


async def download_command(api: Api, args: argparse.Namespace, io: Streams) -> None:
    output = args.output or PurePosixPath(args.key).name
    if output == STDIO:
        await download_to_stream(api, args.key, io.stdout, io.progress(args.key))
        return
    await download_to_file(
        api, args.key, Path(output), io.progress(args.key), io.note, force_resume=args.resume
    )


async def ls_command(api: Api, args: argparse.Namespace, io: Streams) -> None:
    """Tab-separated lines, or with ``--json`` a JSON array of the server's
    items written one per line (as ``rclone lsjson``): whole pages stream out
    as they come, and the output is both ``json.load``-able and greppable."""
    items = _listing(api, args.prefix, args.page_size)
    if not args.json:
        async for item in items:
            io.line(f"{item['key']}\t{item['size']}\t{item['content_type']}")
        return
    io.line("[")
    held: str | None = None  # each line but the last ends with a comma
    async for item in items:
        if held is not None:
            io.line(held + ",")
        held = json.dumps(item)
    if held is not None:
        io.line(held)
    io.line("]")


async def _listing(api: Api, prefix: str, page_size: int) -> AsyncIterator[dict[str, Any]]:
    after = ""
    while True:
        query = {"prefix": prefix, "limit": str(page_size)}
        if after:
            query["after"] = after
        page = await api.json("GET", "/videos", params=query)
        for item in page["items"]:
            yield item
        after = page.get("next_after") or ""
        if not after:
            return


async def rm_command(api: Api, args: argparse.Namespace, io: Streams) -> None:
    for key in args.keys:
        async with api.request("DELETE", key_path(key), ok=(200, 204)):
            pass


# ---- wiring ------------------------------------------------------------------------


def _page_size(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_PAGE_SIZE:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_PAGE_SIZE}")
    return int(text)


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        help=f"vidproxy's base URL, a path prefix included (default: ${URL_ENV}, else "
        f"{DEFAULT_URL})",
    )
    common.add_argument("--token", help=f"bearer token (default: ${TOKEN_ENV})")
    return common


def _transfer() -> argparse.ArgumentParser:
    """Options of the commands that draw a progress bar."""
    transfer = argparse.ArgumentParser(add_help=False)
    transfer.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return transfer


def add_client_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add upload, download, ls and rm to a parser's subcommands."""
    common, transfer = [_common()], [_common(), _transfer()]
    up = subparsers.add_parser("upload", parents=transfer, help="upload files (or stdin: -)")
    up.add_argument("files", nargs="+", metavar="FILE", help="a file, a directory with -r, or -")
    up.add_argument("--key", help="store under KEY (one FILE only)")
    up.add_argument("--prefix", default="", help="prepend to each file's name to make its key")
    up.add_argument(
        "-r", "--recursive", action="store_true",
        help="upload the files under each directory, keyed by --prefix + their path in it",
    )  # fmt: skip
    up.add_argument("--content-type", help="the Content-Type to store (default: server guesses)")
    up.set_defaults(client_command=upload_command, client_name="upload")

    down = subparsers.add_parser("download", parents=transfer, help="download one object")
    down.add_argument("key", metavar="KEY")
    down.add_argument("-o", "--output", help="file to write, - for stdout (default: KEY's name)")
    down.add_argument(
        "-c", "--continue", dest="resume", action="store_true",
        help="resume any existing FILE (a cut-off download resumes without it)",
    )  # fmt: skip
    down.set_defaults(client_command=download_command, client_name="download")

    ls = subparsers.add_parser("ls", parents=common, help="list keys, sizes and types")
    ls.add_argument("prefix", nargs="?", default="", metavar="PREFIX")
    ls.add_argument(
        "--json", action="store_true",
        help="a JSON array of the objects as GET /videos lists them, one per line",
    )  # fmt: skip
    ls.add_argument("--page-size", type=_page_size, default=MAX_PAGE_SIZE, help=argparse.SUPPRESS)
    ls.set_defaults(client_command=ls_command, client_name="ls")

    rm = subparsers.add_parser("rm", parents=common, help="delete objects")
    rm.add_argument("keys", nargs="+", metavar="KEY")
    rm.set_defaults(client_command=rm_command, client_name="rm")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidproxy", description="vidproxy's HTTP client")
    add_client_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def parse_args(
    parser: argparse.ArgumentParser, argv: list[str] | None = None
) -> argparse.Namespace:
    """``parser.parse_args``, but an option the command does not take is
    reported with that command's usage (``vidproxy ls: error: ...``), not the
    top-level one that argparse prints for subcommands."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        command = _subcommand_parsers(parser).get(getattr(args, "command", None) or "", parser)
        command.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _subcommand_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def run_client(args: argparse.Namespace) -> int:
    """Run the parsed client command; return its exit code."""
    io = Streams.system(getattr(args, "quiet", False))
    try:
        return asyncio.run(run_client_async(args, io))
    except KeyboardInterrupt:
        io.note(f"vidproxy {args.client_name}: interrupted")
        return EXIT_INTERRUPTED


async def run_client_async(args: argparse.Namespace, io: Streams) -> int:
    url = args.url or os.environ.get(URL_ENV) or DEFAULT_URL
    token = args.token or os.environ.get(TOKEN_ENV)
    try:
        async with open_api(url, token) as api:
            await args.client_command(api, args, io)
    except OutputClosed:
        io.end_line()
        io.discard_output()
        return OutputClosed.exit_code
    except ClientError as exc:
        io.note(f"vidproxy {args.client_name}: {exc}")
        if isinstance(exc, ServerError) and exc.status == 401 and not token:
            io.note(f"vidproxy {args.client_name}: pass --token or set ${TOKEN_ENV}")
        return exc.exit_code
    return 0
