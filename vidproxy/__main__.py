"""vidproxy stores and serves video files, on S3 or in a local directory.

  vidproxy serve                     run the HTTP service
  vidproxy sign KEY                  print a signed URL for KEY
  vidproxy verify                    check every stored object and cache entry
  vidproxy upload/download/ls/rm     talk to a running vidproxy

Run "vidproxy COMMAND --help" for a command's options.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import ipaddress
import logging
import os
import sys
from importlib import metadata
from pathlib import Path

from .auth import DEFAULT_TTL_SECONDS, MAX_TTL_SECONDS, SIGNABLE_METHODS, Authorizer
from .buffers import pin_malloc_mmap_threshold
from .client import CLIENT_COMMANDS, CLIENT_ENV_VARS, add_client_commands, run_client
from .client.api import parse_base_url
from .client.commands import parse_args
from .client.errors import UsageError
from .config import Config, ConfigError, check_local_dirs, load_config, unknown_env_vars
from .errors import VidproxyError
from .keys import validate_key
from .logs import configure_logging, keep_credentials_out
from .storage.s3 import describe_s3
from .verify import add_verify_command, run_verify
from .web import server
from .web.app import create_app
from .web.handlers.health import check_once_at_start
from .web.logs import MalformedRequestFilter

DEFAULT_CONFIG = Path("config.toml")
# What POST /sign offers too. HEAD is signed as GET, so the two give the same URL
# and either answers both; scripts that ask for HEAD get it.
SIGN_METHODS = [m for m in ("GET", "HEAD", "PUT", "DELETE") if m in SIGNABLE_METHODS]
EXIT_CONFIG = 2  # a configuration or start-up problem: the operator has to change something
EXIT_CODES = """\
exit codes:
  serve     0  stopped by SIGTERM or Ctrl-C
            2  bad configuration, or it cannot start: the port is in use, the
               address is not this machine's, a directory is unusable
  sign      0  printed the URL;  2  bad configuration or arguments
  verify    0  everything checked is intact;  1  something is damaged
            2  bad configuration, or the store cannot be read
  upload, download, ls, rm
            0  success
            1  the server answered with an error, a local file could not be
               read or written, or the downloaded bytes failed their checksum
            2  usage error;  3  not found (404);  4  connection error
            130  interrupted (Ctrl-C)
"""
# What to try when the address cannot be bound, by errno.
_LISTEN_HINTS = {
    errno.EADDRINUSE: "another process listens there: stop it, or pick another port with --port",
    errno.EACCES: "ports below 1024 need privileges: pick another with --port",
    errno.EADDRNOTAVAIL: "no interface of this machine has that address: check --host",
}
log = logging.getLogger("vidproxy")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vidproxy",
        description=__doc__,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--config", type=Path, help="TOML file (default: ./config.toml if present)")
    serve.add_argument("--host", help="address to bind (server.host)")
    serve.add_argument("--port", type=int, help="port to bind (server.port)")
    sign = commands.add_parser("sign", help="print a signed URL for KEY")
    sign.add_argument("key", metavar="KEY", help="the object's key, e.g. demo/clip.mp4")
    sign.add_argument(
        "--method",
        default="GET",
        type=str.upper,
        choices=SIGN_METHODS,
        help="what the URL grants: GET (download; the URL answers HEAD too), HEAD (the "
        "same URL as GET), PUT (upload) or DELETE (default: GET)",
    )
    sign.add_argument("--ttl", type=int, default=DEFAULT_TTL_SECONDS, help="seconds (3600)")
    sign.add_argument("--config", type=Path, help="TOML file (default: ./config.toml if present)")
    sign.add_argument("--url", default="", help="base URL to prefix, e.g. https://videos.example")
    add_verify_command(commands)
    add_client_commands(commands)
    return parser


def package_version() -> str:
    try:
        return metadata.version("vidproxy")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def config_from_args(args: argparse.Namespace) -> Config:
    path = args.config
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    flags = {name: getattr(args, name, None) for name in ("host", "port")}
    server = {k: v for k, v in flags.items() if v is not None}
    return load_config(path, overrides={"server": server} if server else None)


def serve(config: Config, warnings: list[str]) -> None:
    configure_logging(config.server, [MalformedRequestFilter()])
    auth = config.auth
    keep_credentials_out([*auth.write_tokens, *auth.read_tokens, auth.signing_key], os.environ)
    pin_malloc_mmap_threshold()
    for warning in warnings:
        log.warning("%s", warning)
    where = describe_backend(config)
    log.info("vidproxy storing in %s", where)
    warn_if_exposed(config)
    app = create_app(config)
    app.cleanup_ctx.append(check_once_at_start(where))
    asyncio.run(server.serve(app, config))


def describe_backend(config: Config) -> str:
    if config.backend == "s3":
        return describe_s3(config.s3)
    return f"the fs directory {Path(config.fs.dir).absolute()}"


def warn_if_exposed(config: Config) -> None:
    if config.auth.write_tokens or _is_loopback(config.server.host):
        return
    log.warning(
        "!!! listening on %s with no auth.write_tokens: anyone who can reach this "
        "port can upload, overwrite and delete videos !!!",
        config.server.host,
    )


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def print_signed_url(config: Config, args: argparse.Namespace) -> int:
    authorizer = Authorizer.from_config(config.auth)
    if not authorizer.signing_key:
        print("vidproxy: auth.signing_key is not set", file=sys.stderr)
        return 2
    if not 1 <= args.ttl <= MAX_TTL_SECONDS:
        print(f"vidproxy: --ttl must be 1 to {MAX_TTL_SECONDS} seconds", file=sys.stderr)
        return 2
    base = str(parse_base_url(args.url)) if args.url else ""
    key = validate_key(args.key)
    path, _ = authorizer.signed_path(args.method, key, args.ttl)
    print(base + path)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(build_parser(), argv)
    if args.command in CLIENT_COMMANDS:
        return run_client(args)
    try:
        config = config_from_args(args)
        warnings = unknown_env_vars(os.environ, also_known=CLIENT_ENV_VARS)
        if args.command == "serve":
            warnings += check_local_dirs(config)
    except ConfigError as exc:
        print(f"vidproxy: config error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "sign":
        return run_sign(config, args, warnings)
    if args.command == "verify":
        return run_verify(config, args)
    try:
        serve(config, warnings)
    except server.ListenError as exc:
        hint = _LISTEN_HINTS.get(exc.errno)
        print(f"vidproxy: {exc}" + (f" ({hint})" if hint else ""), file=sys.stderr)
        return EXIT_CONFIG
    except OSError as exc:  # the store's directory or files failed to open
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"vidproxy: cannot start: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_CONFIG
    return 0


def run_sign(config: Config, args: argparse.Namespace, warnings: list[str]) -> int:
    for warning in warnings:
        print(f"vidproxy: warning: {warning}", file=sys.stderr)
    try:
        return print_signed_url(config, args)
    except VidproxyError as exc:
        print(f"vidproxy: {exc.message}", file=sys.stderr)
    except UsageError as exc:
        print(f"vidproxy: {exc}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
