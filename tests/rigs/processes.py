"""Servers as processes: a free loopback port, and ``ServerProcess``, which starts
a command with its output in a log file, waits until it is ready, and always
stops it: a process whose start-up fails is killed before the error goes up."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pytest

from rigs.polling import POLL_INTERVAL, poll

START_TIMEOUT = 20.0  # seconds for a server to answer its first request
STOP_TIMEOUT = 15.0  # seconds a server may take to exit after SIGTERM
LOG_TAIL = 3000  # characters of a server's log quoted when it fails


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for_port(
    port: int, timeout: float = START_TIMEOUT, proc: subprocess.Popen[Any] | None = None
) -> None:
    """Return once 127.0.0.1:``port`` accepts; raise if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        if port_accepts(port):
            return
        time.sleep(POLL_INTERVAL)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def http_status(url: str, method: str = "GET", timeout: float = 2.0) -> int | None:
    """The status of one request, or None while nothing answers."""
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def find_tool(name: str) -> str | None:
    """A tool installed next to this Python (the venv's bin/: this checkout's
    ``vidproxy``, ``moto_server``, ``rclone``), else one on PATH."""
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.is_file() else shutil.which(name)


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM) -> int:
    """``sig``, then SIGKILL if it has not exited within ``STOP_TIMEOUT``; the exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


class ServerProcess:
    """``argv`` as a server process logging to ``log_path``.

    ``start()`` returns once ``is_ready()`` holds (the ``ready`` given, or a
    subclass's own check) and fails the test if the process exits first; if
    anything goes wrong on the way (a timeout, a readiness check that raises, an
    interrupt), the process is killed before the error goes up, so no failed
    start leaves a server running. ``stop()`` sends SIGTERM, then SIGKILL after
    ``STOP_TIMEOUT``. Usable as a context manager.
    """

    name = "server"

    def __init__(
        self,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        preexec_fn: Callable[[], None] | None = None,
        ready: Callable[[], bool] | None = None,
    ) -> None:
        self.argv = list(argv)
        self._ready = ready
        self.log_path = log_path
        self._env = dict(env) if env is not None else None
        self._cwd = cwd
        self._preexec_fn = preexec_fn
        self.proc: subprocess.Popen[bytes] | None = None

    def launch(self) -> None:
        """Start the process and return at once."""
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self._cwd,
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=self._preexec_fn,
            )

    def is_ready(self) -> bool:
        """Whether the server answers; by default, the ``ready`` it was given."""
        if self._ready is None:
            raise NotImplementedError(f"{type(self).__name__} has no readiness check")
        return self._ready()

    def start(self, timeout: float = START_TIMEOUT) -> Self:
        self.launch()
        try:
            poll(self._ready_while_running, f"{self.name} ready", timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def _ready_while_running(self) -> bool:
        if not self.running:
            assert self.proc is not None
            tail = self.log()[-LOG_TAIL:]
            pytest.fail(f"{self.name} exited with {self.proc.returncode}:\n{tail}")
        return self.is_ready()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        if self.running:
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """``sig`` and wait; SIGKILL if it will not go. The exit code (0 if never started)."""
        return 0 if self.proc is None else stop_process(self.proc, sig)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
