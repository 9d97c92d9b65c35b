"""Command line: ``vidproxy serve`` runs the service, ``vidproxy sign`` prints a
signed URL, ``vidproxy verify`` checks what is stored, and
``upload``/``download``/``ls``/``rm`` talk to a running vidproxy."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import sys
from pathlib import Path

from . import server
from .app import create_app
from .auth import Authorizer
from .client import CLIENT_COMMANDS, add_client_commands, run_client
from .config import Config, ConfigError, load_config
from .errors import VidproxyError
from .handlers.sign import DEFAULT_TTL_SECONDS, MAX_TTL_SECONDS, SIGNABLE_METHODS
from .keys import validate_key
from .limits import pin_malloc_mmap_threshold
from .logs import configure_logging
from .verify import add_verify_command, run_verify

DEFAULT_CONFIG = Path("config.toml")
log = logging.getLogger("vidproxy")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidproxy", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--config", type=Path, help="TOML file (default: ./config.toml if present)")
    serve.add_argument("--host", help="address to bind (server.host)")
    serve.add_argument("--port", type=int, help="port to bind (server.port)")
    sign = commands.add_parser("sign", help="print a signed URL path for KEY")
    sign.add_argument("key")
    sign.add_argument("--method", default="GET", choices=sorted(SIGNABLE_METHODS))
    sign.add_argument("--ttl", type=int, default=DEFAULT_TTL_SECONDS, help="seconds (3600)")
    sign.add_argument("--config", type=Path, help="TOML file (default: ./config.toml if present)")
    sign.add_argument("--url", default="", help="base URL to prefix, e.g. https://videos.example")
    add_verify_command(commands)
    add_client_commands(commands)
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    path = args.config
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    flags = {name: getattr(args, name, None) for name in ("host", "port")}
    server = {k: v for k, v in flags.items() if v is not None}
    return load_config(path, overrides={"server": server} if server else None)


def serve(config: Config) -> None:
    configure_logging(config.server)
    pin_malloc_mmap_threshold()
    where = config.s3.bucket if config.backend == "s3" else config.fs.dir
    log.info("vidproxy storing in %s (%s)", where, config.backend)
    warn_if_exposed(config)
    asyncio.run(server.serve(create_app(config), config))


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
    key = validate_key(args.key)
    path, _ = authorizer.signed_path(args.method, key, args.ttl)
    print(args.url.rstrip("/") + path)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in CLIENT_COMMANDS:
        return run_client(args)
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"vidproxy: config error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "sign":
            return print_signed_url(config, args)
        if args.command == "verify":
            return run_verify(config, args)
    except VidproxyError as exc:
        print(f"vidproxy: {exc.message}", file=sys.stderr)
        return 2
    try:
        serve(config)
    except OSError as exc:  # the port is taken, the address is not ours, ...
        print(
            f"vidproxy: cannot listen on {config.server.host}:{config.server.port}: "
            f"{exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
