"""A minimal HTTP/1.1 client over a raw socket: one request per connection.

Cheap enough to stay out of the way (the body goes straight from the kernel
into a preallocated buffer, or from the pattern's views to the kernel), and
precise about time to first byte: the clock reads when the first body byte
is in, not when the headers are.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import struct
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from .units import KiB, MiB

HOST = "127.0.0.1"
RECV_PIECE = 4 * MiB
HEAD_PIECE = 64 * KiB
MAX_HEAD = 64 * KiB
TIMEOUT = 900.0  # seconds any single socket operation may block


class HttpError(Exception):
    """The answer was not what the bench asked for."""


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # names lower-cased
    size: int  # body bytes received
    ttfb: float  # seconds from the request's start to its first body byte
    elapsed: float  # seconds from the request's start to its last byte
    body: bytes = b""  # kept only for small answers (upload JSON, errors)
    sha256: str | None = None
    extra: dict[str, float] = field(default_factory=dict)


def get(
    port: int,
    path: str,
    headers: Mapping[str, str] | None = None,
    *,
    into: memoryview | None = None,
    hash_inline: bool = False,
    first_byte_only: bool = False,
    method: str = "GET",
) -> Reply:
    """GET ``path``; the body lands in ``into`` (from offset 0), is hashed on the
    fly, or is discarded. ``first_byte_only`` closes after the first body byte."""
    start = time.perf_counter()
    with _connect(port) as sock:
        sock.sendall(_head(method, path, headers or {}))
        status, reply_headers, rest, ttfb = _read_head(sock, start)
        length = _content_length(reply_headers, method, status)
        hasher = hashlib.sha256() if hash_inline else None
        if first_byte_only:
            if not rest and length:
                rest = sock.recv(HEAD_PIECE)
                ttfb = time.perf_counter() - start
            return Reply(status, reply_headers, len(rest), ttfb, time.perf_counter() - start)
        size, body, first_at = _read_body(sock, rest, length, into, hasher)
        elapsed = time.perf_counter() - start
    if ttfb is None:
        ttfb = (first_at or time.perf_counter()) - start
    digest = hasher.hexdigest() if hasher is not None else None
    return Reply(status, reply_headers, size, ttfb, elapsed, body, digest)


def upload(
    port: int,
    path: str,
    pieces: Iterable[memoryview],
    length: int | None,
    headers: Mapping[str, str] | None = None,
    method: str = "PUT",
) -> Reply:
    """Send a body from ``pieces``: with ``Content-Length`` when ``length`` is known,
    else ``Transfer-Encoding: chunked`` (one chunk per piece)."""
    all_headers = dict(headers or {})
    if length is None:
        all_headers["Transfer-Encoding"] = "chunked"
    else:
        all_headers["Content-Length"] = str(length)
    start = time.perf_counter()
    with _connect(port) as sock:
        sock.sendall(_head(method, path, all_headers))
        # A server that answers early (an error) closes on us: read what it said.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            _send_body(sock, pieces, chunked=length is None)
        status, reply_headers, rest, _ = _read_head(sock, start)
        size, body, _ = _read_body(sock, rest, _content_length(reply_headers, method, status))
    elapsed = time.perf_counter() - start
    return Reply(status, reply_headers, size, elapsed, elapsed, body)


def send_then_reset(
    port: int,
    path: str,
    pieces: Iterable[memoryview],
    length: int,
    cut_after: int,
    headers: Mapping[str, str] | None = None,
    method: str = "PATCH",
) -> int:
    """Send the head and the first ``cut_after`` of ``length`` body bytes, then
    break the connection (RST, as a dropped network does); bytes sent, head
    included."""
    head = _head(method, path, {**(headers or {}), "Content-Length": str(length)})
    sent = len(head)
    sock = _connect(port)
    try:
        sock.sendall(head)
        left = cut_after
        for piece in pieces:
            if left <= 0:
                break
            view = piece[:left]
            sock.sendall(view)
            sent += len(view)
            left -= len(view)
    finally:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    return sent


def head_bytes(method: str, path: str, headers: Mapping[str, str]) -> int:
    """How long the head of that request is on the wire."""
    return len(_head(method, path, headers))


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection((HOST, port), timeout=TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _head(method: str, path: str, headers: Mapping[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _send_body(sock: socket.socket, pieces: Iterable[memoryview], *, chunked: bool) -> None:
    if not chunked:
        for piece in pieces:
            sock.sendall(piece)
        return
    for piece in pieces:
        if piece:
            _sendmsg_all(sock, [f"{len(piece):x}\r\n".encode(), piece, b"\r\n"])
    sock.sendall(b"0\r\n\r\n")


def _sendmsg_all(sock: socket.socket, buffers: list[bytes | memoryview]) -> None:
    views = [memoryview(b).cast("B") for b in buffers]
    while views:
        sent = sock.sendmsg(views)
        while views and sent >= len(views[0]):
            sent -= len(views[0])
            views.pop(0)
        if views and sent:
            views[0] = views[0][sent:]


def _read_head(
    sock: socket.socket, start: float
) -> tuple[int, dict[str, str], bytes, float | None]:
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(HEAD_PIECE)
        if not piece:
            raise HttpError(f"connection closed before the answer's head ({len(data)} bytes)")
        data += piece
        if len(data) > MAX_HEAD:
            raise HttpError("the answer's head is too large")
    head, rest = data.split(b"\r\n\r\n", 1)
    ttfb = time.perf_counter() - start if rest else None
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, rest, ttfb


def _content_length(headers: Mapping[str, str], method: str, status: int) -> int | None:
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return 0
    if "chunked" in headers.get("transfer-encoding", "").lower():
        raise HttpError("chunked answers are not supported by the bench client")
    value = headers.get("content-length")
    return int(value) if value is not None else None


def _read_body(
    sock: socket.socket,
    rest: bytes,
    length: int | None,
    into: memoryview | None = None,
    hasher: hashlib._Hash | None = None,
) -> tuple[int, bytes, float | None]:
    """Read the body (``length`` bytes, or to the close): its size, the body itself
    when small and not sunk elsewhere, and when its first byte came (if it was read here)."""
    keep_small = into is None and hasher is None
    small = bytearray()
    size = 0
    first_at: float | None = None
    scratch = None if into is not None else memoryview(bytearray(RECV_PIECE))

    def take(view: memoryview) -> None:
        nonlocal size
        if into is not None:
            into[size : size + len(view)] = view
        elif hasher is not None:
            hasher.update(view)
        if keep_small and len(small) < MAX_HEAD:
            small.extend(view[: MAX_HEAD - len(small)])
        size += len(view)

    if rest:
        take(memoryview(rest)[: length if length is not None else len(rest)])
    while length is None or size < length:
        want = RECV_PIECE if length is None else min(RECV_PIECE, length - size)
        if into is not None:
            got = sock.recv_into(into[size : size + want])
        else:
            assert scratch is not None
            got = sock.recv_into(scratch[:want])
        if not got:
            if length is not None:
                raise HttpError(f"connection closed after {size} of {length} body bytes")
            break
        if first_at is None:
            first_at = time.perf_counter()
        if into is not None:
            size += got
        else:
            assert scratch is not None
            take(scratch[:got])
    return size, bytes(small), first_at
