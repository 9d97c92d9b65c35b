"""Helpers for the end-to-end suite: client tools, test media, vidproxy's access log.
The servers and polls are the rigs of tests/rigs/, named here for the e2e modules."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rigs.polling import poll
from rigs.processes import ServerProcess, find_tool, free_port, http_status

__all__ = ["ServerProcess", "find_tool", "free_port", "http_status", "poll"]

BACKENDS = ["fs", "moto", "rclone"]
ACCESS_KEY = "e2e-access"
SECRET_KEY = "e2e-secret"
REGION = "us-east-1"
# S3's smallest part: the clips and files below span several, so multipart runs.
PART_SIZE = "5MiB"

TOOL_TIMEOUT = 60.0  # seconds any one client process may run

# The test clip: long enough to seek to 45 s, small enough to make in a few seconds.
CLIP_SECONDS = 60
CLIP_SIZE = "320x240"
CLIP_FPS = 25
KEYFRAME_EVERY = 2 * CLIP_FPS  # frames: one fragment, and one seek point, per 2 s
# Constant bitrate asked of VP9 (it makes ~11 MB): more than Chromium reads ahead
# before a seek, so the seek itself needs a Range request.
WEBM_BITRATE = "3M"


def require_tool(name: str) -> str:
    path = find_tool(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path


_ACCESS_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[\d.]+" (?P<status>\d{3}) ')


@dataclass(frozen=True)
class AccessLine:
    method: str
    path: str
    status: int


@dataclass
class Vidproxy:
    backend: str
    base_url: str
    log_path: Path
    workdir: Path
    bucket: str = ""  # on S3 backends

    def url(self, key: str) -> str:
        return f"{self.base_url}/videos/{key}"

    def log_mark(self) -> int:
        """Where the log ends now: pass to ``access_lines`` to see only what follows."""
        return self.log_path.stat().st_size

    def log_text(self, since: int = 0) -> str:
        with self.log_path.open("rb") as log:
            log.seek(since)
            return log.read().decode(errors="replace")

    def access_lines(self, since: int = 0, key: str | None = None) -> list[AccessLine]:
        """The access-log lines (``%a "%r" %s %b %Tf``) written after ``since``."""
        lines = []
        for match in _ACCESS_LINE.finditer(self.log_text(since)):
            line = AccessLine(match["method"], match["path"], int(match["status"]))
            if key is None or line.path.split("?")[0] == f"/videos/{key}":
                lines.append(line)
        return lines

    def wait_for_access(
        self,
        since: int,
        key: str,
        until: Callable[[list[AccessLine]], bool],
        what: str,
        timeout: float = 10.0,
    ) -> list[AccessLine]:
        """Poll the log until the lines on ``key`` written after ``since`` satisfy
        ``until``: aiohttp writes a line only after the response is finished, which
        may be after the client has its bytes."""
        poll(lambda: until(self.access_lines(since, key)), f"{what} in vidproxy's log", timeout)
        return self.access_lines(since, key)

    def wait_for_upload(self, since: int, key: str) -> None:
        """Wait for the access line of the PUT of ``key`` logged after ``since``,
        so that it does not land in a later test's part of the log."""

        def logged(lines: list[AccessLine]) -> bool:
            return any(line.method == "PUT" for line in lines)

        self.wait_for_access(since, key, logged, f"the PUT of {key}")


def lavfi_inputs(seconds: int = CLIP_SECONDS) -> list[str]:
    """A moving test pattern and a tone, from ffmpeg's own sources."""
    video = f"testsrc2=size={CLIP_SIZE}:rate={CLIP_FPS}:duration={seconds}"
    audio = f"sine=frequency=440:sample_rate=48000:duration={seconds}"
    return ["-f", "lavfi", "-i", video, "-f", "lavfi", "-i", audio, "-map", "0:v", "-map", "1:a"]


def run_tool(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    """Run a client process to completion; fail the test on a non-zero exit."""
    result = subprocess.run(argv, capture_output=True, timeout=TOOL_TIMEOUT, **kwargs)
    if result.returncode != 0:
        stderr = result.stderr.decode(errors="replace")[-3000:]
        pytest.fail(f"{Path(argv[0]).name} exited with {result.returncode}:\n{stderr}")
    return result
