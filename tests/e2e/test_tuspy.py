"""tuspy (PyPI ``tuspy``, module ``tusclient``), an independent tus client, against
vidproxy as a process on fs, moto and rclone: chunked uploads, checksums, a
connection cut mid-PATCH and the resume, bytes and X-Content-SHA256 compared."""

from __future__ import annotations

import hashlib
import sys
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from tusclient import client as tus_client
from tusclient.exceptions import TusCommunicationError, TusUploadFailed

from .support import Vidproxy, poll

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tcp_proxy import tcp_proxy

pytestmark = pytest.mark.e2e
MiB = 1024 * 1024
# The request head and Upload-* headers a PATCH sends before its body: < 1 KiB.
HEAD_BYTES = 1024


def get(url: str) -> tuple[bytes, str | None]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read(), response.headers.get("X-Content-SHA256")


def offset_of(url: str) -> int:
    request = urllib.request.Request(url, method="HEAD", headers={"Tus-Resumable": "1.0.0"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return int(response.headers["Upload-Offset"])


def uploader(base: str, path: Path, key: str, **options: object) -> object:
    client = tus_client.TusClient(base + "/uploads")
    return client.uploader(file_path=str(path), metadata={"key": key}, **options)


def assert_stored(vidproxy: Vidproxy, key: str, path: Path) -> None:
    body, sha256 = get(vidproxy.url(key))
    expected = path.read_bytes()
    assert body == expected
    assert sha256 == hashlib.sha256(expected).hexdigest()


@pytest.mark.parametrize("chunk", [2 * MiB + 7, 64 * MiB])
def test_tuspy_uploads_in_chunks(vidproxy: Vidproxy, big_file: Path, key: str, chunk: int) -> None:
    uploader(vidproxy.base_url, big_file, key, chunk_size=chunk).upload()
    assert_stored(vidproxy, key, big_file)


def test_tuspy_with_checksums(vidproxy: Vidproxy, big_file: Path, key: str) -> None:
    uploader(vidproxy.base_url, big_file, key, chunk_size=6 * MiB, upload_checksum=True).upload()
    assert_stored(vidproxy, key, big_file)


@pytest.mark.parametrize("cut_at", [3 * MiB, 7 * MiB + 12345])
def test_tuspy_resumes_after_a_connection_cut_mid_patch(
    vidproxy: Vidproxy, big_file: Path, key: str, cut_at: int
) -> None:
    port = urlsplit(vidproxy.base_url).port
    assert port is not None
    with tcp_proxy(port) as proxy:
        first = uploader(proxy.url, big_file, key, chunk_size=64 * MiB)
        first.set_url(first.create_url())  # type: ignore[attr-defined]
        creation = proxy.sent
        proxy.cut_after = creation + cut_at
        with pytest.raises((TusCommunicationError, TusUploadFailed, OSError)):
            first.upload()  # type: ignore[attr-defined]
        assert proxy.cuts == 1
    location = urlsplit(first.url).path  # type: ignore[attr-defined]
    direct = vidproxy.base_url + location
    # Every byte that reached vidproxy counts (the PATCH's head came first), once
    # vidproxy has seen the connection go.
    poll(lambda: offset_of(direct) >= cut_at - HEAD_BYTES, "the cut bytes stored", 10.0)
    offset = offset_of(direct)
    assert offset <= cut_at
    second = uploader(vidproxy.base_url, big_file, key, chunk_size=64 * MiB, url=direct)
    assert second.offset == offset  # type: ignore[attr-defined]
    second.upload()  # type: ignore[attr-defined]
    assert_stored(vidproxy, key, big_file)
