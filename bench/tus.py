"""tus uploads through vidproxy (``/uploads``): a whole upload in PATCHes of
``PATCH_BYTES``, and one cut off and resumed, counting the bytes the resume
sends. Every upload ends checked: the last PATCH's ``X-Content-SHA256`` and
the file the backend stored."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass

from . import client
from .data import Pattern
from .services import Vidproxy
from .units import MiB
from .uploads import SEND_PIECE, VerifyError

TUS = {"Tus-Resumable": "1.0.0"}
PATCH_BYTES = 64 * MiB  # issue 13's figure: a 1 GiB upload in 64 MiB PATCHes
OFFSET_STREAM = "application/offset+octet-stream"
LOCK_WAIT = 30.0  # seconds the cut PATCH may take to be stored after the cut
LOCK_POLL = 0.05


@dataclass
class Resumed:
    offset: int  # where the server said to go on after the cut
    sent: int  # bytes the resume put on the wire: its HEAD and PATCHes, heads included


def create(vp: Vidproxy, key: str, size: int) -> str:
    """POST /uploads; the upload's path."""
    metadata = "key " + _b64(key)
    headers = {**TUS, "Upload-Length": str(size), "Upload-Metadata": metadata}
    reply = client.upload(vp.port, "/uploads", [], 0, headers, method="POST")
    if reply.status != 201 or "location" not in reply.headers:
        raise VerifyError(f"POST /uploads answered {reply.status}: {reply.body[:300]!r}")
    return reply.headers["location"]


def patch(
    vp: Vidproxy, path: str, pattern: Pattern, offset: int, length: int
) -> tuple[client.Reply, int]:
    """One PATCH of the pattern's bytes ``offset`` to ``offset + length``; the
    answer and the bytes it put on the wire."""
    headers = _patch_headers(offset)
    pieces = pattern.pieces(offset, offset + length, SEND_PIECE)
    reply = client.upload(vp.port, path, pieces, length, headers, method="PATCH")
    if reply.status != 204 or reply.headers.get("upload-offset") != str(offset + length):
        raise VerifyError(f"PATCH at {offset} answered {reply.status} {reply.headers}")
    wire = client.head_bytes("PATCH", path, {**headers, "Content-Length": str(length)})
    return reply, wire + length


def send_from(vp: Vidproxy, path: str, pattern: Pattern, offset: int, size: int) -> int:
    """PATCH from ``offset`` to the end; the bytes put on the wire. Checks the digest."""
    sent = 0
    reply = None
    while offset < size:
        length = min(PATCH_BYTES, size - offset)
        reply, wire = patch(vp, path, pattern, offset, length)
        sent += wire
        offset += length
    if reply is None or reply.headers.get("x-content-sha256") != pattern.sha256(size):
        got = None if reply is None else reply.headers.get("x-content-sha256")
        raise VerifyError(f"the last PATCH of {path} answered X-Content-SHA256 {got}")
    return sent


def upload(vp: Vidproxy, pattern: Pattern, key: str, size: int) -> float:
    """Seconds for a whole tus upload: creation, then PATCHes of ``PATCH_BYTES``."""
    start = time.perf_counter()
    path = create(vp, key, size)
    send_from(vp, path, pattern, 0, size)
    return time.perf_counter() - start


def cut_then_resume(vp: Vidproxy, pattern: Pattern, key: str, size: int, cut: int) -> Resumed:
    """Upload in PATCHes until byte ``cut``, where the connection breaks in the
    middle of a PATCH; then resume as a client does (HEAD, PATCH the rest)."""
    path = create(vp, key, size)
    offset = 0
    while offset + PATCH_BYTES <= cut:
        patch(vp, path, pattern, offset, PATCH_BYTES)
        offset += PATCH_BYTES
    length = min(PATCH_BYTES, size - offset)
    pieces = pattern.pieces(offset, offset + length, SEND_PIECE)
    client.send_then_reset(vp.port, path, pieces, length, cut - offset, _patch_headers(offset))
    resumed_at, head_wire = _stored_offset(vp, path)
    return Resumed(resumed_at, head_wire + send_from(vp, path, pattern, resumed_at, size))


def _stored_offset(vp: Vidproxy, path: str) -> tuple[int, int]:
    """The offset to resume at, once the server has let go of the cut PATCH (it
    answers 423 while it stores that PATCH's bytes); the bytes those requests
    put on the wire."""
    wire = 0
    deadline = time.monotonic() + LOCK_WAIT
    while True:
        head = client.get(vp.port, path, TUS, method="HEAD")
        wire += client.head_bytes("HEAD", path, TUS)
        if head.status not in (200, 204) or "upload-offset" not in head.headers:
            raise VerifyError(f"HEAD {path} answered {head.status}")
        offset = int(head.headers["upload-offset"])
        # A PATCH of no bytes at that offset: 204 once the upload is free again.
        probe = {**_patch_headers(offset), "Content-Length": "0"}
        wire += client.head_bytes("PATCH", path, probe)
        status = client.upload(vp.port, path, [], 0, _patch_headers(offset), method="PATCH").status
        if status == 204:
            return offset, wire
        if status not in (409, 423) or time.monotonic() > deadline:
            raise VerifyError(f"an empty PATCH at {offset} of {path} answered {status}")
        time.sleep(LOCK_POLL)


def _patch_headers(offset: int) -> dict[str, str]:
    return {**TUS, "Upload-Offset": str(offset), "Content-Type": OFFSET_STREAM}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()
