"""tus 1.0.0 at /uploads, raw HTTP: every status the protocol answers, on fs and
on S3 (moto), bytes compared with what GET /videos gives back."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from vidproxy.config import Config
from vidproxy.units import MiB

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {**TUS, "Content-Type": "application/offset+octet-stream"}
PART = 5 * MiB


def metadata(**pairs: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in pairs.items())


def payload(size: int, seed: int = 1) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


async def create(client: TestClient[Any, Any], length: int | None, **meta: str) -> str:
    headers = {**TUS, "Upload-Metadata": metadata(**meta)}
    if length is None:
        headers["Upload-Defer-Length"] = "1"
    else:
        headers["Upload-Length"] = str(length)
    response = await client.post("/uploads", headers=headers)
    assert response.status == 201, await response.text()
    assert response.headers["Tus-Resumable"] == "1.0.0"
    return response.headers["Location"]


async def patch(
    client: TestClient[Any, Any], location: str, offset: int, data: bytes, **headers: str
) -> Any:
    sent = {**OCTETS, "Upload-Offset": str(offset), **headers}
    return await client.patch(location, data=data, headers=sent)


async def upload_in_pieces(
    client: TestClient[Any, Any], body: bytes, pieces: list[int], **meta: str
) -> Any:
    location = await create(client, len(body), **meta)
    offset = 0
    response = None
    for size in pieces:
        response = await patch(client, location, offset, body[offset : offset + size])
        assert response.status == 204, await response.text()
        offset += size
        assert response.headers["Upload-Offset"] == str(offset)
    return response


async def fetched(client: TestClient[Any, Any], key: str) -> bytes:
    response = await client.get(f"/videos/{key}")
    assert response.status == 200, await response.text()
    return await response.read()


async def test_options_names_version_extensions_size_and_checksums(
    client: TestClient[Any, Any],
) -> None:
    response = await client.options("/uploads")
    assert response.status == 204
    assert response.headers["Tus-Version"] == "1.0.0"
    extensions = set(response.headers["Tus-Extension"].split(","))
    assert {"creation", "creation-with-upload", "creation-defer-length"} <= extensions
    assert {"termination", "expiration", "checksum"} <= extensions
    assert response.headers["Tus-Max-Size"] == str(100 * 1024**3)
    assert set(response.headers["Tus-Checksum-Algorithm"].split(",")) == {"sha1", "sha256", "md5"}
    assert "Tus-Resumable" not in response.headers


@pytest.mark.parametrize(
    "pieces",
    [
        [1, 1024 * 1024 - 1],  # a byte, then the rest of a small upload
        [3 * MiB, 3 * MiB, 5 * MiB + 17],  # tails below a part, carried over
        [11 * MiB + 5],  # one PATCH of several parts
        [PART, PART],  # on part boundaries
    ],
)
async def test_an_upload_in_pieces_is_stored_whole(
    client: TestClient[Any, Any], pieces: list[int]
) -> None:
    body = payload(sum(pieces))
    last = await upload_in_pieces(client, body, pieces, key="clips/a.mp4")
    assert last.headers["X-Video-Key"] == "clips/a.mp4"
    assert last.headers["X-Content-SHA256"] == hashlib.sha256(body).hexdigest()
    assert await fetched(client, "clips/a.mp4") == body
