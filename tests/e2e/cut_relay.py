"""A counting, cutting TCP relay between a client process and vidproxy.

The client talks to ``relay.url``; every byte goes on to vidproxy unchanged.
``sent`` counts what the client sent towards vidproxy (request heads and
bodies alike). ``cut_after(n)`` arms a cut: once ``n`` more bytes have gone
up, every connection through the relay is broken (a reset both ways) in the
middle of whatever request is under way, as a dropped Wi-Fi or a dying proxy
would; later connections pass again. ``hold_after(n)`` instead stalls the one
connection that carries the ``n``-th byte (its client stalls mid-request, to
be interrupted; other connections pass) until ``cut_held()`` breaks it.
Threads, not asyncio, so that a test
can drive client processes with plain ``subprocess`` calls while it runs.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from .support import free_port, poll

RELAY_CHUNK = 64 * 1024
CUT_TIMEOUT = 60.0  # seconds a test waits for an armed cut to happen


def _reset(sock: socket.socket) -> None:
    """Close with RST (SO_LINGER 0): the peer sees the connection broken, not ended.
    ``shutdown(SHUT_RD)`` first wakes a pump thread blocked in ``recv`` on it:
    until that ``recv`` returns, the kernel keeps the socket open whatever
    ``close`` says, and the peer would see nothing at all."""
    with suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RD)
    with suppress(OSError):
        sock.close()


class CuttingRelay:
    def __init__(self, upstream_port: int) -> None:
        self._upstream = ("127.0.0.1", upstream_port)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._sent = 0
        self._cut_at: int | None = None  # the value of ``sent`` that triggers the cut
        self.cuts = 0
        self._hold_at: int | None = None  # the value of ``sent`` where bytes stop passing
        self._released = threading.Event()
        self.holding = threading.Event()  # a pump is stalled at the hold
        self._open: set[socket.socket] = set()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._closed = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    @property
    def sent(self) -> int:
        with self._lock:
            return self._sent

    def cut_after(self, n: int) -> None:
        """Break every connection once ``n`` more bytes have gone up."""
        with self._lock:
            self._cut_at = self._sent + n

    def hold_after(self, n: int) -> None:
        """Stall the connection that carries the ``n``-th byte from now, until ``cut_held``."""
        with self._lock:
            self._hold_at = self._sent + n
        self._released.clear()
        self.holding.clear()

    def wait_for_hold(self) -> None:
        poll(self.holding.is_set, "a request stalled at the hold", CUT_TIMEOUT)

    def cut_held(self) -> None:
        """Break the held connection (both ways, with a reset)."""
        self._released.set()

    def wait_for_cut(self, cuts: int = 1) -> None:
        poll(lambda: self.cuts >= cuts, f"{cuts} cut(s) through the relay", CUT_TIMEOUT)

    def close(self) -> None:
        self._closed = True
        _reset(self._listener)
        self._break_all()

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self._upstream)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._open |= {client, upstream}
            threading.Thread(target=self._pump_up, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump_down, args=(upstream, client), daemon=True).start()

    def _pump_up(self, source: socket.socket, sink: socket.socket) -> None:
        """Client to vidproxy, counted; the armed cut happens here."""
        try:
            while data := source.recv(RELAY_CHUNK):
                allowed = self._take(len(data))
                if allowed < len(data):
                    sink.sendall(data[:allowed])
                    self._cut()
                    return
                sink.sendall(data)
                if self._take_hold():
                    self.holding.set()
                    self._released.wait(CUT_TIMEOUT)
                    self._forget(source, sink)
                    with self._lock:
                        self.cuts += 1
                    return
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            self._forget(source, sink)

    def _pump_down(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(RELAY_CHUNK):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            self._forget(source, sink)

    def _take(self, n: int) -> int:
        """Count ``n`` bytes going up; how many of them may pass before the cut."""
        with self._lock:
            if self._cut_at is None or self._sent + n < self._cut_at:
                self._sent += n
                return n
            allowed = max(0, self._cut_at - self._sent)
            self._sent += allowed
            self._cut_at = None
            return allowed

    def _take_hold(self) -> bool:
        """Whether this connection is the one to stall (the hold then is used up)."""
        with self._lock:
            if self._hold_at is None or self._sent < self._hold_at:
                return False
            self._hold_at = None
            return True

    def _cut(self) -> None:
        self._break_all()
        with self._lock:
            self.cuts += 1

    def _break_all(self) -> None:
        with self._lock:
            victims, self._open = self._open, set()
        for sock in victims:
            _reset(sock)

    def _forget(self, *socks: socket.socket) -> None:
        with self._lock:
            self._open -= set(socks)
        for sock in socks:
            _reset(sock)


@contextmanager
def relay_to(base_url: str) -> Iterator[CuttingRelay]:
    relay = CuttingRelay(int(base_url.rsplit(":", 1)[1]))
    try:
        yield relay
    finally:
        relay.close()
