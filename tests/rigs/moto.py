"""moto in server mode as a process of its own, on a free loopback port."""

from __future__ import annotations

from pathlib import Path

from rigs.processes import ServerProcess, free_port, port_accepts, require_server


class MotoProcess(ServerProcess):
    """``moto_server -H 127.0.0.1 -p PORT``; ready once the port accepts."""

    name = "moto_server"

    def __init__(self, log_path: Path, exe: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        exe = exe or require_server("moto_server", "'moto[server]'")
        super().__init__([exe, "-H", "127.0.0.1", "-p", str(self.port)], log_path)

    def is_ready(self) -> bool:
        return port_accepts(self.port)
