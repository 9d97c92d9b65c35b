"""tus requests as the tests send them, raw: creation, a PATCH, the metadata and
checksum headers. ``client`` is anything with aiohttp's request methods and a
base URL: a ``TestClient``, or a ``ClientSession(base_url=...)`` on a process."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

TUS = {"Tus-Resumable": "1.0.0"}
OCTETS = {**TUS, "Content-Type": "application/offset+octet-stream"}


def metadata(**pairs: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in pairs.items())


def checksum_header(algorithm: str, data: bytes) -> dict[str, str]:
    digest = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
    return {"Upload-Checksum": f"{algorithm} {digest}"}


async def create(client: Any, length: int | None, **meta: str) -> str:
    """POST /uploads (deferred length for ``None``); the new upload's Location."""
    headers = {**TUS, "Upload-Metadata": metadata(**meta)}
    if length is None:
        headers["Upload-Defer-Length"] = "1"
    else:
        headers["Upload-Length"] = str(length)
    response = await client.post("/uploads", headers=headers)
    assert response.status == 201, await response.text()
    assert response.headers["Tus-Resumable"] == "1.0.0"
    return str(response.headers["Location"])


async def patch(client: Any, location: str, offset: int, data: bytes, **headers: str) -> Any:
    sent = {**OCTETS, "Upload-Offset": str(offset), **headers}
    return await client.patch(location, data=data, headers=sent)
