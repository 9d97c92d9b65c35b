"""Command line: ``vidproxy serve [--config PATH] [--host H] [--port P]``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from aiohttp import web

from .app import create_app
from .config import Config, ConfigError, load_config

DEFAULT_CONFIG = Path("config.toml")
log = logging.getLogger("vidproxy")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidproxy", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--config", type=Path, help="TOML file (default: ./config.toml if present)")
    serve.add_argument("--host", help="address to bind (server.host)")
    serve.add_argument("--port", type=int, help="port to bind (server.port)")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    path = args.config
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    flags = {name: getattr(args, name) for name in ("host", "port")}
    server = {k: v for k, v in flags.items() if v is not None}
    return load_config(path, overrides={"server": server} if server else None)


def serve(config: Config) -> None:
    logging.basicConfig(
        level=config.server.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    where = config.s3.bucket if config.backend == "s3" else config.fs.dir
    log.info("vidproxy storing in %s (%s)", where, config.backend)
    web.run_app(
        create_app(config),
        host=config.server.host,
        port=config.server.port,
        access_log_format='%a "%r" %s %b %Tf',
        print=lambda message: log.info(message.strip().splitlines()[0]),
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        print(f"vidproxy: config error: {exc}", file=sys.stderr)
        return 2
    serve(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
