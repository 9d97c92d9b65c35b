"""End-to-end fixtures: real processes on loopback ports, configured as an operator would.

- ``moto_url`` and ``rclone_url``: the two S3 endpoints, one process each per session
  (``moto_server``; ``rclone serve s3`` with an auth key over a temp directory).
- ``vidproxy``: the installed ``vidproxy`` console script, started once per test
  module and backend (``fs``, ``moto``, ``rclone``) with a generated ``config.toml``
  plus ``VIDPROXY_*`` and ``AWS_*`` environment variables; its log goes to a file
  the tests read. Ready when ``/readyz`` answers 200; stopped with SIGTERM.
- ``big_file`` and ``webm_clip``: test media made once per session (the clip from
  ffmpeg's lavfi sources).

Every wait is a bounded poll; nothing sleeps in place of a readiness check.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from chromium import CHROMIUM, CHROMIUM_ARGS
from rigs.moto import MotoProcess
from rigs.rclone import RcloneProcess
from rigs.vidproxy import VidproxyProcess

from .support import (
    ACCESS_KEY,
    BACKENDS,
    KEYFRAME_EVERY,
    PART_SIZE,
    REGION,
    SECRET_KEY,
    WEBM_BITRATE,
    Vidproxy,
    find_tool,
    lavfi_inputs,
    require_tool,
    run_tool,
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "e2e: end-to-end tests that run vidproxy and real clients as processes"
    )


# ---- S3 endpoints -----------------------------------------------------------


@pytest.fixture(scope="session")
def e2e_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def moto_url(e2e_dir: Path) -> Iterator[str]:
    """moto in server mode, its own process."""
    with MotoProcess(e2e_dir / "moto.log").start() as moto:
        yield moto.url


@pytest.fixture(scope="session")
def rclone_url(e2e_dir: Path) -> Iterator[str]:
    """``rclone serve s3`` over a temp directory (one bucket per subdirectory)."""
    root = e2e_dir / "rclone-data"
    root.mkdir()
    with RcloneProcess(root, e2e_dir / "rclone.log", ACCESS_KEY, SECRET_KEY).start() as rclone:
        yield rclone.url


# ---- vidproxy as a process -----------------------------------------------------


def vidproxy_exe() -> str:
    exe = find_tool("vidproxy")
    if exe is None:
        pytest.fail("the vidproxy console script is not installed (pip install -e .)")
    return exe


def _config_toml(workdir: Path, port: int) -> str:
    return "\n".join(
        [
            "[server]",
            'host = "127.0.0.1"',
            f"port = {port}",
            'log_level = "info"',
            "",
            "[fs]",
            f"dir = {json.dumps(str(workdir / 'data'))}",
            "",
            "[cache]",
            f"dir = {json.dumps(str(workdir / 'cache'))}",
            "",
            "[s3]",
            f'part_size = "{PART_SIZE}"',
            "abort_stale_uploads_after = 0  # as NO_STALE_UPLOAD_SWEEP in tests/conftest.py",
            "",
        ]
    )


def _environment(backend: str, request: pytest.FixtureRequest) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIDPROXY_", "AWS_"))}
    if backend == "fs":
        return env
    endpoint = request.getfixturevalue(f"{backend}_url")
    env.update(
        VIDPROXY_S3_ENDPOINT_URL=endpoint,
        VIDPROXY_S3_BUCKET=f"e2e-{uuid.uuid4().hex[:12]}",
        VIDPROXY_S3_ADDRESSING_STYLE="path",
        VIDPROXY_S3_CREATE_BUCKET="true",
        AWS_ACCESS_KEY_ID=ACCESS_KEY,
        AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_DEFAULT_REGION=REGION,
    )
    return env


@pytest.fixture(scope="module", params=BACKENDS)
def vidproxy(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Vidproxy]:
    """``vidproxy serve --config config.toml`` on one backend, as its own process."""
    backend = str(request.param)
    workdir = tmp_path_factory.mktemp(f"vidproxy-{backend}")
    config = workdir / "config.toml"
    env = _environment(backend, request)
    process = VidproxyProcess(
        workdir, env, ("--config", str(config)), command=[vidproxy_exe()], probe="/readyz"
    )
    config.write_text(_config_toml(workdir, process.port))
    server = Vidproxy(
        backend, process.url, process.log_path, workdir, env.get("VIDPROXY_S3_BUCKET", "")
    )
    with process.start():
        yield server


@pytest.fixture
def key(request: pytest.FixtureRequest) -> str:
    """A fresh object key per test, so tests sharing a server never meet."""
    name = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")
    return f"e2e/{name}-{uuid.uuid4().hex[:8]}"


# ---- media --------------------------------------------------------------------


@pytest.fixture(scope="session")
def big_file(e2e_dir: Path) -> Path:
    """Random bytes over two and a half S3 parts: a multipart upload whose last
    part is short, and whose size is a multiple of nothing in particular."""
    path = e2e_dir / "big.bin"
    path.write_bytes(os.urandom(12 * 1024 * 1024 + 12345))
    return path


@pytest.fixture(scope="session")
def webm_clip(e2e_dir: Path) -> Path:
    """The test clip as VP9 + Opus in WebM: what Debian's Chromium plays."""
    path = e2e_dir / "clip.webm"
    vp9 = ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"]
    vp9 += ["-b:v", WEBM_BITRATE, "-minrate", WEBM_BITRATE, "-maxrate", WEBM_BITRATE]
    vp9 += ["-g", str(KEYFRAME_EVERY), "-pix_fmt", "yuv420p"]
    opus = ["-c:a", "libopus", "-b:a", "48k"]
    argv = [require_tool("ffmpeg"), "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    run_tool([*argv, *lavfi_inputs(), *vp9, *opus, str(path)])
    return path


# ---- Chromium (sync Playwright), one per test module -------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium for the module's tests; skipped where it is not installed."""
    executable = shutil.which("chromium") or CHROMIUM
    if not Path(executable).is_file():
        pytest.skip("chromium is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            yield browser
        finally:
            browser.close()
