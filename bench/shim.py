"""A thin HTTP/1.1 relay in front of rclone: counts requests and fixes one status.

``python -m bench.shim --port P --upstream-port U --log FILE [--fix-range-status]``

- Every request is written to FILE as one line, ``METHOD TARGET RANGE STATUS``,
  so the bench counts the GETs that reached the backend at the wire.
- rclone answers a ranged GET with ``200`` plus ``Content-Range``; nginx's
  slice module refuses that ("unexpected status code 200 in slice response").
  With ``--fix-range-status`` such an answer is relayed as ``206``, nothing
  else changed.

One thread and one upstream connection per client connection (keep-alive
kept). Heads are parsed; ``Content-Length`` bodies move with ``splice(2)``,
socket to pipe to socket, so the bytes never enter Python and the hop costs
next to nothing. Chunked and close-delimited bodies are copied plainly.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import socket
import threading
from typing import BinaryIO

from .units import KiB, MiB

HOST = "127.0.0.1"
RECV_PIECE = 64 * KiB
MAX_HEAD = 64 * KiB
PIPE_SIZE = 1 * MiB
F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ, named in the fcntl module only from 3.10 on some builds


class Closed(Exception):
    """The peer closed the connection between or inside messages."""


class Conn:
    """A blocking socket plus whatever was read past the last head."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pending = bytearray()

    def read_head(self) -> bytes | None:
        while (end := self.pending.find(b"\r\n\r\n")) < 0:
            if len(self.pending) > MAX_HEAD:
                raise Closed("head too large")
            data = self.sock.recv(RECV_PIECE)
            if not data:
                if self.pending:
                    raise Closed("closed inside a head")
                return None
            self.pending += data
        head = bytes(self.pending[: end + 4])
        del self.pending[: end + 4]
        return head

    def read_line(self) -> bytes:
        while (end := self.pending.find(b"\r\n")) < 0:
            data = self.sock.recv(RECV_PIECE)
            if not data:
                raise Closed("closed inside a chunked body")
            self.pending += data
        line = bytes(self.pending[: end + 2])
        del self.pending[: end + 2]
        return line


class Head:
    def __init__(self, raw: bytes) -> None:
        lines = raw.decode("latin-1").split("\r\n")
        self.first = lines[0]
        self.headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                self.headers[name.strip().lower()] = value.strip()
        self.raw = raw

    def length(self) -> int | None:
        value = self.headers.get("content-length")
        return int(value) if value is not None else None

    def chunked(self) -> bool:
        return "chunked" in self.headers.get("transfer-encoding", "").lower()

    def closes(self) -> bool:
        return "close" in self.headers.get("connection", "").lower()


class Pipe:
    def __init__(self) -> None:
        self.r, self.w = os.pipe()
        with contextlib.suppress(OSError):
            fcntl.fcntl(self.w, F_SETPIPE_SZ, PIPE_SIZE)

    def close(self) -> None:
        os.close(self.r)
        os.close(self.w)


def relay_length(src: Conn, dst: socket.socket, length: int, pipe: Pipe) -> None:
    """Move ``length`` body bytes from ``src`` to ``dst``: the buffered part, then splice."""
    buffered = min(len(src.pending), length)
    if buffered:
        dst.sendall(src.pending[:buffered])
        del src.pending[:buffered]
        length -= buffered
    while length > 0:
        moved = os.splice(src.sock.fileno(), pipe.w, min(length, PIPE_SIZE))
        if moved == 0:
            raise Closed("body cut short")
        length -= moved
        while moved:
            moved -= os.splice(pipe.r, dst.fileno(), moved)


def relay_chunked(src: Conn, dst: socket.socket, pipe: Pipe) -> None:
    while True:
        size_line = src.read_line()
        dst.sendall(size_line)
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            while (line := src.read_line()) != b"\r\n":
                dst.sendall(line)  # trailers
            dst.sendall(b"\r\n")
            return
        relay_length(src, dst, size + 2, pipe)


def relay_to_close(src: Conn, dst: socket.socket) -> None:
    if src.pending:
        dst.sendall(src.pending)
        src.pending.clear()
    while data := src.sock.recv(RECV_PIECE):
        dst.sendall(data)


class Relay:
    def __init__(self, upstream_port: int, log: BinaryIO, fix_range_status: bool) -> None:
        self.upstream_port = upstream_port
        self.fix = fix_range_status
        self._log = log
        self._lock = threading.Lock()

    def serve(self, client_sock: socket.socket) -> None:
        upstream_sock = socket.create_connection((HOST, self.upstream_port))
        upstream_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pipe = Pipe()
        client, upstream = Conn(client_sock), Conn(upstream_sock)
        try:
            while self.exchange(client, upstream, pipe):
                pass
        except (Closed, OSError):
            pass
        finally:
            pipe.close()
            upstream_sock.close()
            client_sock.close()

    def exchange(self, client: Conn, upstream: Conn, pipe: Pipe) -> bool:
        raw = client.read_head()
        if raw is None:
            return False
        request = Head(raw)
        method, target = request.first.split(" ")[:2]
        upstream.sock.sendall(request.raw)
        if request.chunked():
            relay_chunked(client, upstream.sock, pipe)
        else:
            relay_length(client, upstream.sock, request.length() or 0, pipe)
        answer_raw = upstream.read_head()
        if answer_raw is None:
            raise Closed("upstream closed before answering")
        answer = Head(answer_raw)
        status = int(answer.first.split(" ")[1])
        if self.fix and status == 200 and "content-range" in answer.headers:
            answer_raw = answer_raw.replace(
                answer.first.encode(), b"HTTP/1.1 206 Partial Content", 1
            )
            status = 206
        self._record(method, target, request.headers.get("range", "-"), status)
        client.sock.sendall(answer_raw)
        if method == "HEAD" or status in (204, 304) or status < 200:
            pass
        elif answer.chunked():
            relay_chunked(upstream, client.sock, pipe)
        elif answer.length() is not None:
            relay_length(upstream, client.sock, answer.length() or 0, pipe)
        else:
            relay_to_close(upstream, client.sock)
            return False
        return not (request.closes() or answer.closes())

    def _record(self, method: str, target: str, range_: str, status: int) -> None:
        line = f"{method} {target} {range_.replace(' ', '')} {status}\n".encode()
        with self._lock:
            self._log.write(line)
            self._log.flush()


def serve_forever(port: int, upstream_port: int, log_path: str, fix: bool) -> None:
    with open(log_path, "ab") as log, socket.create_server((HOST, port), backlog=128) as server:
        relay = Relay(upstream_port, log, fix)
        while True:
            client_sock, _ = server.accept()
            client_sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=relay.serve, args=(client_sock,), daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.shim", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--fix-range-status", action="store_true")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        serve_forever(args.port, args.upstream_port, args.log, args.fix_range_status)


if __name__ == "__main__":
    main()
