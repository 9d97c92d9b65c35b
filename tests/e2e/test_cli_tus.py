"""``vidproxy upload FILE`` over tus, as a process against vidproxy on fs, moto
and rclone: interrupted (Ctrl-C, a cut connection) mid-upload, then run again
as it was: it resumes past the stored bytes and the object is the file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .cut_relay import CuttingRelay, relay_to
from .support import TOOL_TIMEOUT, Vidproxy, find_tool, poll

pytestmark = pytest.mark.e2e

MiB = 1024 * 1024
# The upload is one PATCH (the file is under the client's 64 MiB): it is cut
# or stalled here, past the first 5 MiB part and short of the second.
CUT_AT = 8 * MiB + 4321
EXIT_INTERRUPTED = 130
EXIT_CONNECTION = 4
HEAD_SLACK = 64 * 1024  # request heads, on top of the bytes a resumed run must send
TERMINATE_WITHIN = 10.0  # seconds for vidproxy to let go of an upload whose PATCH was cut


@pytest.fixture
def relay(vidproxy: Vidproxy) -> Iterator[CuttingRelay]:
    with relay_to(vidproxy.base_url) as relay:
        yield relay


@pytest.fixture
def cache_home(tmp_path: Path) -> Path:
    """The client's XDG_CACHE_HOME: where it keeps what it needs to resume."""
    path = tmp_path / "xdg-cache"
    path.mkdir()
    return path


def tus_status(url: str, method: str) -> int:
    request = urllib.request.Request(url, method=method, headers={"Tus-Resumable": "1.0.0"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def upload_argv(path: Path, key: str, url: str) -> list[str]:
    exe = find_tool("vidproxy")
    assert exe is not None, "the vidproxy console script is not installed (pip install -e .)"
    return [exe, "upload", str(path), "--key", key, "--url", url]


def client_env(cache_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDPROXY_")}
    return {**env, "XDG_CACHE_HOME": str(cache_home)}


def run_upload(
    path: Path, key: str, url: str, cache_home: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        upload_argv(path, key, url),
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
        env=client_env(cache_home),
    )


def saved_states(cache_home: Path) -> list[dict[str, object]]:
    folder = cache_home / "vidproxy" / "uploads"
    return [json.loads(p.read_text()) for p in folder.glob("*.json")] if folder.is_dir() else []


def resumed_offset(stderr: str, path: Path) -> int:
    """N from the client's ``FILE: resumed at N bytes``."""
    for line in stderr.splitlines():
        head, found, tail = line.partition(": resumed at ")
        if found and head == str(path):
            return int(tail.removesuffix(" bytes"))
    pytest.fail(f"no 'resumed at' in the client's stderr:\n{stderr}")


def stored_bytes(vidproxy: Vidproxy, key: str) -> tuple[bytes, str | None]:
    with urllib.request.urlopen(vidproxy.url(key), timeout=30) as response:
        return response.read(), response.headers.get("X-Content-SHA256")


def assert_resumes_and_stores(
    vidproxy: Vidproxy, relay: CuttingRelay, path: Path, key: str, cache_home: Path
) -> int:
    """Run the same command again: it resumes, sends only the rest, stores the file.
    The offset it resumes at is never past what reached vidproxy before."""
    before = relay.sent
    again = run_upload(path, key, relay.url, cache_home)
    assert (again.returncode, again.stdout) == (0, f"{key}\n"), again.stderr
    offset = resumed_offset(again.stderr, path)
    assert 0 < offset <= before
    assert relay.sent - before <= path.stat().st_size - offset + HEAD_SLACK
    body, digest = stored_bytes(vidproxy, key)
    assert body == path.read_bytes()
    assert digest is not None
    assert saved_states(cache_home) == []  # done: nothing left to resume
    return offset


def test_ctrl_c_mid_upload_then_the_same_command_resumes(
    vidproxy: Vidproxy, relay: CuttingRelay, big_file: Path, key: str, cache_home: Path
) -> None:
    relay.hold_after(CUT_AT)
    proc = subprocess.Popen(
        upload_argv(big_file, key, relay.url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=client_env(cache_home),
    )
    try:
        relay.wait_for_hold()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=TOOL_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    relay.cut_held()
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert err.strip().endswith("vidproxy upload: interrupted")
    assert len(saved_states(cache_home)) == 1

    assert_resumes_and_stores(vidproxy, relay, big_file, key, cache_home)


def test_a_dropped_connection_then_the_same_command_resumes(
    vidproxy: Vidproxy, relay: CuttingRelay, big_file: Path, key: str, cache_home: Path
) -> None:
    relay.cut_after(CUT_AT)
    cut = run_upload(big_file, key, relay.url, cache_home)
    assert cut.returncode == EXIT_CONNECTION, cut.stderr
    assert "run the same command again to resume" in cut.stderr

    assert_resumes_and_stores(vidproxy, relay, big_file, key, cache_home)


def test_a_file_changed_since_the_cut_is_uploaded_anew(
    vidproxy: Vidproxy, relay: CuttingRelay, big_file: Path, key: str, cache_home: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    path = tmp_path / "changing.bin"
    path.write_bytes(big_file.read_bytes())
    relay.cut_after(CUT_AT)
    assert run_upload(path, key, relay.url, cache_home).returncode == EXIT_CONNECTION

    path.write_bytes(os.urandom(path.stat().st_size))  # same size, new bytes and mtime
    again = run_upload(path, key, relay.url, cache_home)
    assert again.returncode == 0, again.stderr
    assert "resumed at" not in again.stderr
    assert stored_bytes(vidproxy, key)[0] == path.read_bytes()


def test_an_upload_gone_from_the_server_starts_over(
    vidproxy: Vidproxy, relay: CuttingRelay, big_file: Path, key: str, cache_home: Path
) -> None:
    relay.cut_after(CUT_AT)
    assert run_upload(big_file, key, relay.url, cache_home).returncode == EXIT_CONNECTION
    (state,) = saved_states(cache_home)
    # Until vidproxy has stored what the cut PATCH brought, the upload is locked (423).
    url = str(state["upload_url"])
    poll(lambda: tus_status(url, "DELETE") != 423, "a DELETE not answered 423", TERMINATE_WITHIN)
    assert tus_status(url, "HEAD") == 404

    again = run_upload(big_file, key, relay.url, cache_home)
    assert again.returncode == 0, again.stderr
    assert f"{big_file}: the earlier upload is gone; started over" in again.stderr
    assert stored_bytes(vidproxy, key)[0] == big_file.read_bytes()
