"""ffmpeg and ffprobe against a running vidproxy: a live chunked upload as ffmpeg
encodes, a probe, a seek over Range, and a stream copy back to disk."""

from __future__ import annotations

import json
import re
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from .support import (
    CLIP_SECONDS,
    KEYFRAME_EVERY,
    AccessLine,
    Vidproxy,
    lavfi_inputs,
    require_tool,
    run_tool,
)

pytestmark = pytest.mark.e2e

# Fragmented MP4 needs no seekable output, so it can go straight over HTTP.
FRAGMENTED = "frag_keyframe+empty_moov"
SEEK_TO = 45  # seconds
# Enough bits that the clip spans two 5 MiB S3 parts: the upload goes multipart.
VIDEO_BITRATE = "800k"
DURATION_TOLERANCE = 0.1  # seconds
# What aiohttp logs when a handler raises.
ERROR_LINE = "Error handling request"


@dataclass(frozen=True)
class LiveUpload:
    key: str
    url: str
    teed: Path  # the very bytes ffmpeg's muxer wrote, also written to a local file
    trace: str  # ffmpeg's debug log: its HTTP request headers


def ffmpeg_cmd(*args: str) -> list[str]:
    return [require_tool("ffmpeg"), "-hide_banner", "-nostdin", "-y", *args]


@pytest.fixture(scope="module")
def live_upload(vidproxy: Vidproxy, tmp_path_factory: pytest.TempPathFactory) -> LiveUpload:
    """Encode a clip and PUT it to vidproxy while encoding. The tee muxer writes
    the same muxed bytes to a local file: that file is what was uploaded."""
    key = f"e2e/live-{uuid.uuid4().hex[:8]}.mp4"
    url = vidproxy.url(key)
    teed = tmp_path_factory.mktemp("ffmpeg") / "teed.mp4"
    h264 = ["-c:v", "libx264", "-preset", "ultrafast", "-g", str(KEYFRAME_EVERY)]
    h264 += ["-b:v", VIDEO_BITRATE, "-pix_fmt", "yuv420p"]
    aac = ["-c:a", "aac", "-b:a", "64k"]
    # The tee muxer cannot tell the encoders that MP4 wants global headers.
    outputs = f"[f=mp4:movflags={FRAGMENTED}]{teed}|[f=mp4:movflags={FRAGMENTED}:method=PUT]{url}"
    argv = ffmpeg_cmd("-loglevel", "debug", *lavfi_inputs(), *h264, *aac)
    mark = vidproxy.log_mark()
    result = run_tool([*argv, "-flags", "+global_header", "-f", "tee", outputs])
    # ffmpeg hangs up without reading the answer, so it may exit before vidproxy
    # has completed the upload: the access-log line says when it has.
    vidproxy.wait_for_upload(mark, key)
    return LiveUpload(key, url, teed, result.stderr.decode(errors="replace"))


def probe(target: str | Path) -> dict[str, object]:
    argv = [require_tool("ffprobe"), "-v", "error", "-of", "json"]
    argv += ["-show_entries", "format=duration:stream=index,codec_type,codec_name,duration"]
    return json.loads(run_tool([*argv, str(target)]).stdout)


def test_live_chunked_upload_is_stored_byte_for_byte(
    vidproxy: Vidproxy, live_upload: LiveUpload
) -> None:
    # ffmpeg exits 0 whatever vidproxy answers: the proof is in the log and a GET.
    assert f"request: PUT /videos/{live_upload.key} HTTP/1.1" in live_upload.trace
    assert "Transfer-Encoding: chunked" in live_upload.trace
    puts = vidproxy.access_lines(key=live_upload.key)
    assert [(line.method, line.status) for line in puts] == [("PUT", 201)]
    with urllib.request.urlopen(live_upload.url, timeout=30) as response:
        stored = response.read()
    assert len(stored) > 5 * 1024 * 1024, "the clip should span several S3 parts"
    assert stored == live_upload.teed.read_bytes()


def test_ffprobe_reads_duration_and_streams(live_upload: LiveUpload) -> None:
    remote = probe(live_upload.url)

    assert remote == probe(live_upload.teed)
    streams = remote["streams"]
    assert isinstance(streams, list)
    assert [(s["codec_type"], s["codec_name"]) for s in streams] == [
        ("video", "h264"),
        ("audio", "aac"),
    ]
    duration = float(remote["format"]["duration"])  # type: ignore[index]
    assert abs(duration - CLIP_SECONDS) < DURATION_TOLERANCE


def _ranges_asked(trace: str) -> list[int]:
    return [int(first) for first in re.findall(r"^Range: bytes=(\d+)-", trace, re.M)]


def _statuses_seen(trace: str) -> list[int]:
    return [int(code) for code in re.findall(r"header='HTTP/1\.1 (\d{3})", trace)]


def _frame_at_seek(source: str | Path, out: Path) -> str:
    """ffmpeg's trace log (it shows each HTTP request and answer) of one seek."""
    argv = ffmpeg_cmd("-loglevel", "trace", "-ss", str(SEEK_TO), "-i", str(source))
    result = run_tool([*argv, "-frames:v", "1", "-f", "image2", str(out)])
    return result.stderr.decode(errors="replace")


def test_seek_uses_range(vidproxy: Vidproxy, live_upload: LiveUpload, tmp_path: Path) -> None:
    mark = vidproxy.log_mark()

    trace = _frame_at_seek(live_upload.url, tmp_path / "remote.png")
    _frame_at_seek(live_upload.teed, tmp_path / "local.png")

    asked = _ranges_asked(trace)
    # The fragment holding 45 s of a 60 s clip lies well past the middle.
    assert max(asked) > live_upload.teed.stat().st_size // 2
    assert _statuses_seen(trace) == [206] * len(asked)
    assert (tmp_path / "remote.png").read_bytes() == (tmp_path / "local.png").read_bytes()
    lines = vidproxy.wait_for_access(mark, live_upload.key, lambda ls: len(ls) > 0, "a GET")
    assert {(line.method, line.status) for line in lines} == {("GET", 206)}


def test_abandoned_ranges_are_logged_quietly(
    vidproxy: Vidproxy, live_upload: LiveUpload, tmp_path: Path
) -> None:
    # ffmpeg walks the fragments with open ranges (bytes=N-), dropping each
    # connection after a few bytes: routine for players, not a server error.
    mark = vidproxy.log_mark()
    asked = _ranges_asked(_frame_at_seek(live_upload.url, tmp_path / "remote.png"))

    def settled(lines: list[AccessLine]) -> bool:
        return len(lines) >= len(asked) or ERROR_LINE in vidproxy.log_text(mark)

    lines = vidproxy.wait_for_access(mark, live_upload.key, settled, f"{len(asked)} GETs")
    assert ERROR_LINE not in vidproxy.log_text(mark)
    assert len(lines) == len(asked)


def test_stream_copy_back_is_identical(live_upload: LiveUpload, tmp_path: Path) -> None:
    def stream_copy(source: str | Path, out: Path) -> bytes:
        argv = ffmpeg_cmd("-loglevel", "error", "-i", str(source), "-map", "0", "-c", "copy")
        run_tool([*argv, "-f", "mp4", "-movflags", FRAGMENTED, str(out)])
        return out.read_bytes()

    remote = stream_copy(live_upload.url, tmp_path / "remote.mp4")
    local = stream_copy(live_upload.teed, tmp_path / "local.mp4")

    assert len(remote) > 0
    assert remote == local
