"""tus-js-client (npm, under Node) uploading to vidproxy's /uploads on fs, moto
and rclone: cut off mid-PATCH by the relay, resumed (by a second run that
finds the upload in tus-js-client's FileUrlStorage, and by tus-js-client's
own retry), then the stored bytes and X-Content-SHA256 checked."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .cut_relay import CuttingRelay, relay_to
from .support import TOOL_TIMEOUT, Vidproxy, require_tool

pytestmark = pytest.mark.e2e

JS_DIR = Path(__file__).resolve().parent.parent / "js"
DRIVER = JS_DIR / "tus_upload.js"
NPM_TIMEOUT = 300.0  # seconds for `npm ci` of the pinned tus-js-client
MiB = 1024 * 1024
# The one-PATCH upload is cut here: past the first 5 MiB part (so S3 holds a
# part), short of the second, inside one PATCH of the whole file.
CUT_AT = 8 * MiB + 4321
# What a request head and the relay's granularity may add to the bytes a
# resumed run sends on top of the bytes past the resumed offset.
HEAD_SLACK = 64 * 1024
# A second run starts while the server may still be storing the cut PATCH's
# bytes: it answers 423 until then, and tus-js-client retries 423 (and 409).
RESUME_RETRIES = [200, 500, 1000, 2000, 4000]


@pytest.fixture(scope="session")
def node() -> str:
    """Node with the pinned tus-js-client (``npm ci`` of tests/js/ if not yet done:
    CI runs it in .ci/run; a developer's first run does it here)."""
    exe = require_tool("node")
    if not (JS_DIR / "node_modules" / "tus-js-client").is_dir():
        npm = require_tool("npm")
        argv = [npm, "ci", "--no-audit", "--no-fund", "--prefix", str(JS_DIR)]
        subprocess.run(argv, check=True, capture_output=True, timeout=NPM_TIMEOUT)
    return exe


@pytest.fixture
def relay(vidproxy: Vidproxy) -> Iterator[CuttingRelay]:
    with relay_to(vidproxy.base_url) as relay:
        yield relay


def run_driver(node: str, options: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """One run of tests/js/tus_upload.js: its exit code and its JSON report."""
    result = subprocess.run(
        [node, str(DRIVER), json.dumps(options)],
        capture_output=True,
        timeout=TOOL_TIMEOUT,
        cwd=JS_DIR,
    )
    lines = result.stdout.decode().strip().splitlines()
    if not lines:
        pytest.fail(f"tus_upload.js printed nothing:\n{result.stderr.decode()[-3000:]}")
    return result.returncode, json.loads(lines[-1])


def upload_options(relay: CuttingRelay, path: Path, key: str, store: Path) -> dict[str, Any]:
    return {
        "endpoint": f"{relay.url}/uploads",
        "file": str(path),
        "store": str(store),
        "metadata": {"key": key, "filetype": "video/webm"},
    }


def stored(vidproxy: Vidproxy, key: str) -> tuple[bytes, dict[str, str]]:
    with urllib.request.urlopen(vidproxy.url(key), timeout=30) as response:
        return response.read(), dict(response.headers)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_cut_upload_resumes_from_the_url_store_in_a_second_run(
    vidproxy: Vidproxy, node: str, relay: CuttingRelay, big_file: Path, key: str, tmp_path: Path
) -> None:
    options = upload_options(relay, big_file, key, tmp_path / "tus-urls.json")
    relay.cut_after(CUT_AT)

    code, first = run_driver(node, options)
    assert code == 1, first
    assert relay.cuts == 1
    before = relay.sent

    code, second = run_driver(node, {**options, "retryDelays": RESUME_RETRIES})
    assert code == 0, second
    assert second["url"] == first["url"]  # the same upload, found by fingerprint
    resumed = second["resumedFrom"]
    # An offset is a promise: durably stored bytes only, so never past the cut;
    # and the part (at least) stored before the cut is kept.
    assert 0 < resumed <= CUT_AT
    size = big_file.stat().st_size
    assert relay.sent - before <= size - resumed + HEAD_SLACK
    assert second["offsets"][-1] == ["PATCH", size]
    assert second["videoKey"] == key
    assert second["sha256"] == sha256_of(big_file)
    body, headers = stored(vidproxy, key)
    assert body == big_file.read_bytes()
    assert headers["X-Content-SHA256"] == sha256_of(big_file)
    assert headers["Content-Type"] == "video/webm"
    assert json.loads((tmp_path / "tus-urls.json").read_text()) == {}  # forgotten once done


def test_tus_js_client_resumes_by_itself_after_a_cut_between_small_patches(
    vidproxy: Vidproxy, node: str, relay: CuttingRelay, big_file: Path, key: str, tmp_path: Path
) -> None:
    # PATCHes of 3 MiB + 1: shorter than an S3 part and unaligned to anything.
    options = upload_options(relay, big_file, key, tmp_path / "tus-urls.json")
    options.update(chunkSize=3 * MiB + 1, retryDelays=[0, 200, 1000])
    relay.cut_after(CUT_AT)

    code, report = run_driver(node, options)
    assert code == 0, report
    assert relay.cuts == 1
    methods = [method for method, _ in report["offsets"]]
    assert "HEAD" in methods  # it asked where to go on after the cut
    assert 0 < report["resumedFrom"] <= CUT_AT
    assert report["sha256"] == sha256_of(big_file)
    body, headers = stored(vidproxy, key)
    assert body == big_file.read_bytes()
    assert headers["X-Content-SHA256"] == sha256_of(big_file)


def test_an_upload_of_one_byte_over_tus_js_client(
    vidproxy: Vidproxy, node: str, relay: CuttingRelay, key: str, tmp_path: Path
) -> None:
    one = tmp_path / "one.bin"
    one.write_bytes(os.urandom(1))
    code, report = run_driver(node, upload_options(relay, one, key, tmp_path / "urls.json"))
    assert code == 0, report
    assert stored(vidproxy, key)[0] == one.read_bytes()
    assert report["sha256"] == sha256_of(one)
