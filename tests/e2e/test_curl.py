"""curl against a running vidproxy: uploads with a length and from a pipe, ranges, resume."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from .support import TOOL_TIMEOUT, Vidproxy, poll, require_tool, run_tool

pytestmark = pytest.mark.e2e

# curl's download speed for the download that gets cut: slow enough to cut it midway.
RESUME_RATE = "2M"
# The interrupted download is cut once this much of it is on disk.
CUT_AFTER_BYTES = 1024 * 1024


@pytest.fixture
def curl() -> list[str]:
    # --fail: an HTTP error is a non-zero exit; -v: request and answer headers on stderr.
    return [require_tool("curl"), "--silent", "--show-error", "--fail", "--verbose"]


def upload_file(
    vidproxy: Vidproxy, curl: list[str], path: Path, key: str
) -> tuple[dict[str, object], str]:
    mark = vidproxy.log_mark()
    result = run_tool([*curl, "-T", str(path), vidproxy.url(key)])
    vidproxy.wait_for_upload(mark, key)
    return json.loads(result.stdout), result.stderr.decode(errors="replace")


def download(curl: list[str], url: str, out: Path, *extra: str) -> str:
    result = run_tool([*curl, *extra, "-o", str(out), url])
    return result.stderr.decode(errors="replace")


def test_upload_file_with_expect_100_continue(
    vidproxy: Vidproxy, big_file: Path, curl: list[str], key: str, tmp_path: Path
) -> None:
    stored, trace = upload_file(vidproxy, curl, big_file, key)

    assert f"> Content-Length: {big_file.stat().st_size}" in trace
    assert "> Expect: 100-continue" in trace
    assert "< HTTP/1.1 100 Continue" in trace
    assert "< HTTP/1.1 201 Created" in trace
    assert stored["size"] == big_file.stat().st_size
    out = tmp_path / "got.bin"
    download(curl, vidproxy.url(key), out)
    assert out.read_bytes() == big_file.read_bytes()


def test_upload_etag_answers_conditional_requests(
    vidproxy: Vidproxy, big_file: Path, curl: list[str], key: str, tmp_path: Path
) -> None:
    # A multipart upload on S3: rclone's CompleteMultipartUpload ETag ("md5-N")
    # is not the one its HEAD and GET report (the plain MD5).
    stored, _ = upload_file(vidproxy, curl, big_file, key)
    etag = str(stored["etag"])
    out = tmp_path / "got.bin"

    unchanged = download(curl, vidproxy.url(key), out, "-H", f"If-None-Match: {etag}")
    ranged = download(curl, vidproxy.url(key), out, "-r", "0-99", "-H", f"If-Range: {etag}")

    assert "< HTTP/1.1 304 Not Modified" in unchanged
    assert "< HTTP/1.1 206 Partial Content" in ranged
    assert out.read_bytes() == big_file.read_bytes()[:100]


def test_chunked_upload_from_a_pipe(
    vidproxy: Vidproxy, big_file: Path, curl: list[str], key: str, tmp_path: Path
) -> None:
    body = big_file.read_bytes()
    argv = [*curl, "-T", "-", "-H", "Transfer-Encoding: chunked", vidproxy.url(key)]
    result = run_tool(argv, input=body)

    trace = result.stderr.decode(errors="replace")
    assert "> Transfer-Encoding: chunked" in trace
    assert "> Content-Length" not in trace
    assert json.loads(result.stdout)["size"] == len(body)
    out = tmp_path / "got.bin"
    download(curl, vidproxy.url(key), out)
    assert out.read_bytes() == body


# (curl -r argument, the slice of the file it names)
RANGES = [
    ("0-99", slice(0, 100)),
    ("5242000-5243999", slice(5242000, 5244000)),  # across the first S3 part boundary
    ("10000000-", slice(10000000, None)),
    ("-1000", slice(-1000, None)),
]


def test_ranges(
    vidproxy: Vidproxy, big_file: Path, curl: list[str], key: str, tmp_path: Path
) -> None:
    upload_file(vidproxy, curl, big_file, key)
    body = big_file.read_bytes()
    size = len(body)
    mark = vidproxy.log_mark()

    # The first range is the cold read on S3 backends, the others follow the cache fill.
    for number, (spec, part) in enumerate(RANGES):
        out = tmp_path / f"range-{number}.bin"
        trace = download(curl, vidproxy.url(key), out, "-r", spec)
        expected = body[part]
        first = range(size)[part][0]
        assert "< HTTP/1.1 206 Partial Content" in trace, spec
        content_range = f"bytes {first}-{first + len(expected) - 1}/{size}"
        assert f"< Content-Range: {content_range}" in trace, spec
        assert out.read_bytes() == expected, spec
    lines = vidproxy.wait_for_access(
        mark, key, lambda lines: len(lines) >= len(RANGES), f"{len(RANGES)} GETs"
    )
    assert [(line.method, line.status) for line in lines] == [("GET", 206)] * len(RANGES)


def test_resume_an_interrupted_download(
    vidproxy: Vidproxy, big_file: Path, curl: list[str], key: str, tmp_path: Path
) -> None:
    upload_file(vidproxy, curl, big_file, key)
    out = tmp_path / "partial.bin"
    slow = [*curl, "--limit-rate", RESUME_RATE, "-o", str(out), vidproxy.url(key)]
    interrupted = subprocess.Popen(slow, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        poll(lambda: out.exists() and out.stat().st_size >= CUT_AFTER_BYTES, "a partial file", 10)
    finally:
        interrupted.kill()
        interrupted.wait(timeout=TOOL_TIMEOUT)
    have = out.stat().st_size
    assert 0 < have < big_file.stat().st_size, "the first download was not cut short"

    trace = download(curl, vidproxy.url(key), out, "-C", "-")

    assert f"> Range: bytes={have}-" in trace
    assert "< HTTP/1.1 206 Partial Content" in trace
    assert out.read_bytes() == big_file.read_bytes()
