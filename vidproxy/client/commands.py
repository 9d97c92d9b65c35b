"""The client subcommands, their arguments, and the one place that turns a
``ClientError`` into a message on stderr and an exit code."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, TextIO

from .api import Api, key_path, open_api
from .errors import ClientError, ServerError, UsageError
from .progress import Progress
from .transfer import download_to_file, download_to_stream, local, upload

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

    @classmethod
    def system(cls, quiet: bool = False) -> Streams:
        show = sys.stderr.isatty() and not quiet
        return cls(sys.stdin.buffer, sys.stdout.buffer, sys.stderr, show)

    def progress(self, label: str) -> Callable[[int | None], Progress]:
        return lambda total: Progress(label, total, self.stderr, self.show_progress)

    def line(self, text: str) -> None:
        self.stdout.write(text.encode() + b"\n")
        self.stdout.flush()

    def note(self, text: str) -> None:
        print(text, file=self.stderr, flush=True)


Command = Callable[[Api, argparse.Namespace, Streams], Awaitable[None]]


# ---- the commands ----------------------------------------------------------------


async def upload_command(api: Api, args: argparse.Namespace, io: Streams) -> None:
    for name, key in _upload_plan(args):
        if name == STDIO:
            stored = await upload(api, io.stdin, None, key, args.content_type, _bar(io, "stdin"))
        else:
            source, size = await local(name, _open_input, name)
            try:
                bar = _bar(io, name, size)
                stored = await upload(api, source, size, key, args.content_type, bar)
            finally:
                source.close()
        io.line(stored["key"])


def _open_input(name: str) -> tuple[BinaryIO, int]:
    source = open(name, "rb")  # noqa: SIM115 -- the caller closes it
    return source, os.fstat(source.fileno()).st_size


def _bar(io: Streams, label: str, total: int | None = None) -> Progress:
    return io.progress(label)(total)


def _upload_plan(args: argparse.Namespace) -> list[tuple[str, str | None]]:
    """(file, key) pairs, checked before anything is sent. A file's key is
    ``--prefix`` + its name; stdin without ``--key`` lets the server pick one."""
    files: list[str] = args.files
    if args.key is not None and len(files) > 1:
        raise UsageError("--key names one object: give one FILE with it")
    if files.count(STDIO) > 1:
        raise UsageError("stdin ('-') can be uploaded once")
    plan: list[tuple[str, str | None]] = []
    for name in files:
        if name != STDIO and not Path(name).is_file():
            raise UsageError(f"{name}: no such file")
        key = args.key
        if key is None and name != STDIO:
            key = args.prefix + Path(name).name
        plan.append((name, key))
    return plan


async def download_command(api: Api, args: argparse.Namespace, io: Streams) -> None:
    output = args.output or PurePosixPath(args.key).name
    if output == STDIO:
        await download_to_stream(api, args.key, io.stdout, io.progress(args.key))
        return
    what = await download_to_file(
        api, args.key, Path(output), io.progress(args.key), force_resume=args.resume
    )
    if what != "downloaded":
        io.note(f"{output}: {what}")


async def ls_command(api: Api, args: argparse.Namespace, io: Streams) -> None:
    after = ""
    while True:
        query = {"prefix": args.prefix, "limit": str(args.page_size)}
        if after:
            query["after"] = after
        page = await api.json("GET", "/videos", params=query)
        for item in page["items"]:
            io.line(f"{item['key']}\t{item['size']}\t{item['content_type']}")
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
        "--url", help=f"vidproxy's base URL (default: ${URL_ENV}, else {DEFAULT_URL})"
    )
    common.add_argument("--token", help=f"bearer token (default: ${TOKEN_ENV})")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return common


def add_client_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add upload, download, ls and rm to a parser's subcommands."""
    common = [_common()]
    up = subparsers.add_parser("upload", parents=common, help="upload files (or stdin: -)")
    up.add_argument("files", nargs="+", metavar="FILE", help="a file, or - for stdin")
    up.add_argument("--key", help="store under KEY (one FILE only)")
    up.add_argument("--prefix", default="", help="prepend to each file's name to make its key")
    up.add_argument("--content-type", help="the Content-Type to store (default: server guesses)")
    up.set_defaults(client_command=upload_command, client_name="upload")

    down = subparsers.add_parser("download", parents=common, help="download one object")
    down.add_argument("key", metavar="KEY")
    down.add_argument("-o", "--output", help="file to write, - for stdout (default: KEY's name)")
    down.add_argument(
        "-c", "--continue", dest="resume", action="store_true",
        help="resume any existing FILE (a cut-off download resumes without it)",
    )  # fmt: skip
    down.set_defaults(client_command=download_command, client_name="download")

    ls = subparsers.add_parser("ls", parents=common, help="list keys, sizes and types")
    ls.add_argument("prefix", nargs="?", default="", metavar="PREFIX")
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
    try:
        return asyncio.run(run_client_async(args, Streams.system(args.quiet)))
    except KeyboardInterrupt:
        print(f"vidproxy {args.client_name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


async def run_client_async(args: argparse.Namespace, io: Streams) -> int:
    url = args.url or os.environ.get(URL_ENV) or DEFAULT_URL
    token = args.token or os.environ.get(TOKEN_ENV)
    try:
        async with open_api(url, token) as api:
            await args.client_command(api, args, io)
    except ClientError as exc:
        io.note(f"vidproxy {args.client_name}: {exc}")
        if isinstance(exc, ServerError) and exc.status == 401 and not token:
            io.note(f"vidproxy {args.client_name}: pass --token or set ${TOKEN_ENV}")
        return exc.exit_code
    return 0
