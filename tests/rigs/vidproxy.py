"""vidproxy as a process: ``vidproxy serve`` configured by ``VIDPROXY_*``
variables on top of a clean environment, its log in a file; for signals, exit
codes, RSS and what gets logged."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import pytest

from rigs.processes import (
    LOG_TAIL,
    START_TIMEOUT,
    STOP_TIMEOUT,
    ServerProcess,
    free_port,
    http_status,
    port_accepts,
)

# ``python -m vidproxy``: this checkout's code, whatever the venv's script says.
MODULE_COMMAND = (sys.executable, "-m", "vidproxy")


class VidproxyProcess(ServerProcess):
    """``vidproxy serve ARGS`` with ``env`` on top of the environment less its
    ``VIDPROXY_*`` variables, on 127.0.0.1 and a free port unless ``env`` names
    one; ready once ``probe`` answers 200 (``""``: once the port accepts).
    ``open_files`` sets its RLIMIT_NOFILE (soft and hard) before it starts;
    ``command`` is what runs ``serve`` (the installed console script in e2e)."""

    name = "vidproxy"

    def __init__(
        self,
        workdir: Path,
        env: Mapping[str, str],
        args: tuple[str, ...] = (),
        open_files: int | None = None,
        *,
        command: Sequence[str] = MODULE_COMMAND,
        probe: str = "/readyz",
    ) -> None:
        self.workdir = workdir
        self.port = int(env.get("VIDPROXY_SERVER_PORT") or free_port())
        self.url = f"http://127.0.0.1:{self.port}"
        self.probe = probe
        self._open_files = open_files
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("VIDPROXY_")}
        full_env.update(
            VIDPROXY_SERVER_HOST="127.0.0.1",
            VIDPROXY_SERVER_PORT=str(self.port),
            PYTHONUNBUFFERED="1",
        )
        full_env.update(env)
        # cwd without a config.toml, so only the environment (and ARGS) configure it.
        super().__init__(
            [*command, "serve", *args],
            workdir / f"vidproxy-{self.port}.log",
            env=full_env,
            cwd=workdir,
            preexec_fn=self._limit_open_files if open_files is not None else None,
        )

    def _limit_open_files(self) -> None:
        assert self._open_files is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self._open_files, self._open_files))

    def is_ready(self) -> bool:
        if not self.probe:
            return port_accepts(self.port)
        return http_status(self.url + self.probe) == 200

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        """The exit code; fails the test if the process still runs after ``timeout``."""
        assert self.proc is not None
        try:
            return int(self.proc.wait(timeout=timeout))
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"vidproxy still running {timeout}s after the signal:\n{self.tail()}")

    async def await_exit(self, within: float = STOP_TIMEOUT) -> int:
        return await asyncio.to_thread(self.wait, within)

    def tail(self) -> str:
        return self.log()[-LOG_TAIL:]

    def rss_bytes(self) -> int:
        """VmRSS from /proc; 0 once the process is gone."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return 0
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0


@contextlib.asynccontextmanager
async def running(
    process: VidproxyProcess, probe: str | None = None, within: float = START_TIMEOUT
) -> AsyncIterator[VidproxyProcess]:
    """Start ``process`` (ready at ``probe``, if given) and stop it on the way out."""
    if probe is not None:
        process.probe = probe
    await asyncio.to_thread(process.start, within)
    try:
        yield process
    finally:
        await asyncio.to_thread(process.stop)
