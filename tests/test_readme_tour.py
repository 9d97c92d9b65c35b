"""The README's curl tour, run as written against vidproxy on the fs backend:
each command's output must be what the README prints, byte for byte, but for
the server's address and the listing's modification times."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from readme import console_session

from vidproxy.config import Config

TOUR = "A tour with curl"
README_BASE = "http://localhost:8080"
COMMAND_TIMEOUT = 30.0
# The one thing that differs from run to run.
_LAST_MODIFIED = re.compile(r'"last_modified": "[^"]*"')

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")


def comparable(output: str) -> str:
    # Header lines end in CRLF, which a terminal shows as a line end; a JSON
    # answer has no final newline, and the README shows the next prompt on a
    # line of its own anyway.
    text = output.replace("\r\n", "\n")
    return _LAST_MODIFIED.sub('"last_modified": "…"', text).rstrip("\n")


async def run(command: str, cwd: Path) -> str:
    process = await asyncio.create_subprocess_shell(
        command,
        cwd=cwd,
        executable="/bin/bash",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT)
    assert process.returncode == 0, f"{command!r} exited {process.returncode}: {output!r}"
    return output.decode()


def test_the_tour_has_commands_that_check_something() -> None:
    session = console_session(TOUR)
    assert len(session) >= 6
    assert sum(1 for _, output in session if output) >= 5


async def test_the_readme_tour_prints_what_the_readme_says(
    make_config: Callable[..., Config], start_vidproxy: Callable[..., Any], tmp_path: Path
) -> None:
    server = await start_vidproxy(make_config("fs"))
    base = str(server.make_url("")).rstrip("/")
    for command, expected in console_session(TOUR):
        printed = await run(command.replace(README_BASE, base), tmp_path)
        assert comparable(printed) == comparable(expected), command
