"""A TCP proxy that counts what a client sends and can cut or pause it there.

Between a tus client and vidproxy: every byte from the client is counted across
connections; once ``cut_after`` of them have gone upstream, both sides of that
connection are closed (a dropped network mid-PATCH), once. ``pause_after`` stops
forwarding the client's bytes there instead, until ``release()``: the PATCH is
then known to be mid-body, for a test that kills the server under it. Runs on
its own thread and loop, so blocking clients (tuspy, urllib) can use it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

PIECE = 64 * 1024


class TcpProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.sent = 0  # client bytes forwarded so far
        self.cut_after: int | None = None
        self.pause_after: int | None = None
        self.cuts = 0
        self.paused = threading.Event()  # set once forwarding stopped at pause_after
        self._go = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        future.result(10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def release(self) -> None:
        self.pause_after = None
        self._go.set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        down = asyncio.ensure_future(self._pipe(up_reader, writer))
        try:
            if await self._forward_client(reader, up_writer):
                down.cancel()  # cut: both sides close at once
            with suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(down, 60)
        finally:
            for w in (writer, up_writer):
                w.close()

    async def _forward_client(self, reader: asyncio.StreamReader, up: asyncio.StreamWriter) -> bool:
        """Forward until the client's end (False) or the cut (True)."""
        with suppress(OSError):
            while piece := await reader.read(PIECE):
                limited = await self._limit(piece, up)
                if limited is None:
                    return True
                up.write(limited)
                await up.drain()
                self.sent += len(limited)
            up.write_eof()
        return False

    async def _limit(self, piece: bytes, up: asyncio.StreamWriter) -> bytes | None:
        if self.cut_after is not None and self.sent + len(piece) >= self.cut_after:
            keep = piece[: self.cut_after - self.sent]
            up.write(keep)
            await up.drain()
            self.sent += len(keep)
            self.cut_after = None
            self.cuts += 1
            return None
        if self.pause_after is not None and self.sent + len(piece) >= self.pause_after:
            keep = piece[: self.pause_after - self.sent]
            up.write(keep)
            await up.drain()
            self.sent += len(keep)
            self.paused.set()
            await asyncio.to_thread(self._go.wait)
            return piece[len(keep) :]
        return piece

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with suppress(OSError):
            while piece := await reader.read(PIECE):
                writer.write(piece)
                await writer.drain()
        with suppress(OSError):
            writer.close()


@contextmanager
def tcp_proxy(upstream_port: int) -> Iterator[TcpProxy]:
    proxy = TcpProxy(upstream_port)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.release()
        proxy.stop()
