"""``python -m vidproxy.client COMMAND ...``: the client without the server's CLI."""

from __future__ import annotations

import sys

from .commands import build_parser, parse_args, run_client

if __name__ == "__main__":
    sys.exit(run_client(parse_args(build_parser())))
