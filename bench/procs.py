"""Child processes the bench starts and always stops: each on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .units import KiB

START_TIMEOUT = 60.0  # seconds for a server to answer (imports are slow on a busy box)
STOP_TIMEOUT = 40.0  # vidproxy drains for up to server.shutdown_timeout (30 s)
POLL = 0.02


class BenchSetupError(Exception):
    """A tool is missing or a server would not start."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_tool(name: str) -> str:
    """A tool beside this Python (the venv's bin/), else on PATH, else /usr/sbin."""
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None and Path("/usr/sbin", name).is_file():
        found = str(Path("/usr/sbin", name))
    if found is None:
        raise BenchSetupError(f"{name} is not installed")
    return found


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class Rss:
    rss: int  # bytes, now
    hwm: int  # bytes, the process's peak so far


def read_rss(pid: int) -> Rss:
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0]) * KiB
    return Rss(values["VmRSS"], values["VmHWM"])


class Proc:
    """One child process with its output in a log file."""

    def __init__(self, name: str, argv: Sequence[str], log: Path, **popen: object) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self._popen = popen
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, ready: Callable[[], bool], timeout: float = START_TIMEOUT) -> None:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                **self._popen,  # type: ignore[call-overload]
            )
        deadline = time.monotonic() + timeout
        while not ready():
            if self.proc.poll() is not None:
                raise BenchSetupError(
                    f"{self.name} exited with {self.proc.returncode}: {self.tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise BenchSetupError(f"{self.name} did not start within {timeout:g}s")
            time.sleep(POLL)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, sig: int = signal.SIGTERM) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def signal_child(self, sig: int) -> None:
        """Signal this process's children (py-spy's target), not the process itself."""
        for child in _children(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, sig)

    def wait(self, timeout: float) -> None:
        if self.proc is not None:
            self.proc.wait(timeout)
            self.proc = None

    def tail(self, size: int = 2000) -> str:
        try:
            return self.log.read_bytes()[-size:].decode("utf-8", "replace")
        except OSError:
            return ""


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has spent so far (``/proc/PID/stat``)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces: the fields after its ")" are fixed.
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu_seconds() -> float:
    """User + system CPU seconds of this process (the bench's own clients)."""
    times = os.times()
    return times.user + times.system


def children(pid: int) -> list[int]:
    return _children(pid)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]
