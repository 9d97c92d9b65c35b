"""The rigs themselves: a server process whose start-up fails is never left
running, and a server that exits during start-up fails the test with its log."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from rigs.moto import MotoProcess
from rigs.processes import ServerProcess

# Long enough to outlive the test by far if nobody stops it.
NEVER_READY = "#!/bin/sh\nexec sleep 600\n"
NOT_READY_WITHIN = 0.5  # seconds


def script(tmp_path: Path, text: str) -> str:
    path = tmp_path / "fake-server"
    path.write_text(text)
    path.chmod(0o755)
    return str(path)


def gone(pid: int) -> bool:
    """The process has exited and been reaped (no zombie under that pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_moto_that_never_listens_is_killed_when_its_start_times_out(tmp_path: Path) -> None:
    moto = MotoProcess(tmp_path / "moto.log", exe=script(tmp_path, NEVER_READY))
    with pytest.raises(pytest.fail.Exception, match="not within"):
        moto.start(timeout=NOT_READY_WITHIN)
    assert moto.proc is not None
    assert moto.proc.returncode is not None and gone(moto.pid)


def test_a_server_whose_readiness_check_raises_is_killed(tmp_path: Path) -> None:
    def broken_check() -> bool:
        raise ConnectionError("the probe itself failed")

    server = ServerProcess(
        [script(tmp_path, NEVER_READY)], tmp_path / "server.log", ready=broken_check
    )
    with pytest.raises(ConnectionError):
        server.start()
    assert not server.running and gone(server.pid)


def test_a_server_that_exits_during_start_up_fails_with_its_log(tmp_path: Path) -> None:
    dies = script(tmp_path, "#!/bin/sh\necho 'cannot bind: address in use'\nexit 3\n")
    server = ServerProcess([dies], tmp_path / "server.log", ready=lambda: False)
    with pytest.raises(pytest.fail.Exception, match=r"exited with 3(?s:.)*cannot bind"):
        server.start()


def test_moto_starts_answers_and_stops(tmp_path: Path) -> None:
    with MotoProcess(tmp_path / "moto.log").start() as moto:
        assert moto.running and moto.is_ready()
    assert not moto.running and gone(moto.pid)
