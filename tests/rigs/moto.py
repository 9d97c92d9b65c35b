"""moto in server mode as a process of its own, on a free loopback port."""

from __future__ import annotations

from pathlib import Path

import pytest

from rigs.processes import ServerProcess, find_tool, free_port, port_accepts


def moto_exe() -> str:
    exe = find_tool("moto_server")
    if exe is None:
        pytest.fail("moto_server is not installed (pip install 'moto[server]')")
    return exe


class MotoProcess(ServerProcess):
    """``moto_server -H 127.0.0.1 -p PORT``; ready once the port accepts."""

    name = "moto_server"

    def __init__(self, log_path: Path, exe: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__([exe or moto_exe(), "-H", "127.0.0.1", "-p", str(self.port)], log_path)

    def is_ready(self) -> bool:
        return port_accepts(self.port)
