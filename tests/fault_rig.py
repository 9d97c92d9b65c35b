"""Fault injection for the S3 side.

- ``TcpFault``: a byte relay on a fixed loopback port in front of an S3 endpoint.
  ``kill()`` aborts every connection through it and stops listening (new ones are
  refused, as from a dead S3); ``revive()`` listens on the same port again. The
  endpoint behind it keeps its state, so "S3 is back" sees the same objects.
- ``S3Faults``: an HTTP proxy in front of an S3 endpoint whose ``rule`` sees every
  request and may answer in S3's place (an XML error) instead of forwarding it,
  and whose ``stall`` picks requests it reads and then never answers.
- ``VidproxyProcess`` and ``MotoProcess`` (from tests/rigs/): vidproxy and moto
  as processes of a test's own, named here too for the modules that import them
  from here.

Chain them as a test needs: vidproxy -> TcpFault -> S3Faults (or ``s3_proxy``,
which can hold or cut a GET body) -> moto.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from rigs.moto import MotoProcess
from rigs.polling import apoll, poll
from rigs.processes import free_port, http_status
from rigs.s3 import object_bytes, pending_uploads
from rigs.vidproxy import VidproxyProcess, running
from s3_proxy import HOP_BY_HOP, NO_AUTO_HEADERS, serve_every_path
from yarl import URL

RELAY_CHUNK = 64 * 1024
START_TIMEOUT = 20.0  # seconds for a process to answer its first request
STOP_TIMEOUT = 15.0  # seconds a process may take to exit after a signal
POLL_INTERVAL = 0.05


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


# ---- TCP: S3 dies and comes back ------------------------------------------------------


class TcpFault:
    """Relays 127.0.0.1:``port`` to ``upstream`` until killed."""

    def __init__(self, upstream: str) -> None:
        url = URL(upstream)
        self._upstream = (url.host or "127.0.0.1", url.port or 80)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.BaseTransport] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def revive(self) -> None:
        """Listen (again) on the same port."""
        if self._server is None:
            self._server = await asyncio.start_server(
                self._accept, "127.0.0.1", self.port, reuse_address=True
            )

    async def kill(self) -> None:
        """Refuse new connections and break every open one, as a crashed S3 would."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for transport in list(self._transports):
            transport.abort()
        self._transports.clear()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        await self.kill()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._transports.add(writer.transport)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.transport.abort()
            self._tasks.discard(task)
            return
        self._transports.add(up_writer.transport)
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for w in (writer, up_writer):
                self._transports.discard(w.transport)
                w.transport.abort()
            self._tasks.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(RELAY_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except Exception:  # the other side is gone: so is this one
        writer.transport.abort()


# ---- HTTP: S3 answers with errors -----------------------------------------------------

# A rule sees each S3 request; it returns a response to send instead of S3's, or None.
Rule = Callable[[web.Request], web.StreamResponse | None]


@dataclass(frozen=True)
class S3Request:
    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    answered: int  # the status the client got


class S3Faults:
    """Forwards to ``upstream`` unless ``rule`` answers; keeps a list of what it saw."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.rule: Rule | None = None
        # Requests it picks are read whole and never answered (until ``close``).
        self.stall: Callable[[web.Request], bool] | None = None
        self.stalled: list[S3Request] = []
        self._released = asyncio.Event()
        self.seen: list[S3Request] = []
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        self._runner, self.url = await serve_every_path(self._handle)

    async def close(self) -> None:
        self._released.set()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def requests(self, predicate: Callable[[S3Request], bool]) -> list[S3Request]:
        return [r for r in self.seen if predicate(r)]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self.stall is not None and self.stall(request):
            await request.read()
            self.stalled.append(_seen(request, 0))
            await self._released.wait()
            return s3_error(500, "InternalError")
        answer = self.rule(request) if self.rule is not None else None
        if answer is None:
            body = await request.read()
            answer = await self._forward(request, body)
        self.seen.append(_seen(request, answer.status))
        return answer

    async def _forward(self, request: web.Request, body: bytes) -> web.StreamResponse:
        assert self._session is not None
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
        # The raw target: moto checks the signature over the bytes vidproxy signed.
        target = URL(self.upstream + request.rel_url.raw_path_qs, encoded=True)
        async with self._session.request(
            request.method,
            target,
            headers=headers,
            data=body,
            skip_auto_headers=NO_AUTO_HEADERS,
            allow_redirects=False,
        ) as upstream:
            data = await upstream.read()
            # Headers as S3 sent them: a HEAD's Content-Length is the object's size.
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for name, value in upstream.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    response.headers.add(name, value)
            await response.prepare(request)
            await response.write(data)
            await response.write_eof()
            return response


def _seen(request: web.Request, status: int) -> S3Request:
    return S3Request(
        request.method, request.path, dict(request.query), dict(request.headers), status
    )


def s3_error(status: int, code: str, marker: str = "") -> web.Response:
    """An S3-style XML error; ``marker`` goes into every free-text field."""
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<Error>'
        f"<Code>{code}</Code><Message>{marker} message</Message>"
        f"<Resource>/{marker}/resource</Resource><RequestId>{marker}-request</RequestId>"
        f"<HostId>{marker}-host</HostId></Error>"
    )
    return web.Response(status=status, text=xml, content_type="application/xml")


def is_upload_part(request: web.Request, number: int | None = None) -> bool:
    if request.method != "PUT" or "uploadId" not in request.query:
        return False
    return number is None or request.query.get("partNumber") == str(number)


def is_list_uploads(request: web.Request) -> bool:
    return request.method == "GET" and "uploads" in request.query


def is_complete(request: web.Request) -> bool:
    return request.method == "POST" and "uploadId" in request.query


def is_put_object(request: web.Request) -> bool:
    """PutObject (botocore may add ``?x-id=PutObject``), not UploadPart."""
    return request.method == "PUT" and "uploadId" not in request.query


# ---- fixtures: a test module imports the ones it uses, as cache_rig.py explains ----


@pytest.fixture(name="s3_faults")
async def s3_faults_fixture(moto_endpoint: str) -> AsyncIterator[S3Faults]:
    """An ``S3Faults`` proxy in front of the session's moto."""
    faults = S3Faults(moto_endpoint)
    await faults.start()
    try:
        yield faults
    finally:
        await faults.close()


MakeTcpFault = Callable[..., Awaitable[TcpFault]]


@pytest.fixture(name="tcp_fault")
async def tcp_fault_fixture() -> AsyncIterator[MakeTcpFault]:
    """``await tcp_fault(upstream, listening=True)``: a ``TcpFault``, closed at teardown."""
    made: list[TcpFault] = []

    async def make(upstream: str, *, listening: bool = True) -> TcpFault:
        fault = TcpFault(upstream)
        made.append(fault)
        if listening:
            await fault.revive()
        return fault

    try:
        yield make
    finally:
        for fault in made:
            await fault.close()


# ---- S3 and processes: in tests/rigs/, named here for the modules that import them here

__all__ = [
    "MotoProcess",
    "VidproxyProcess",
    "apoll",
    "http_status",
    "object_bytes",
    "pending_uploads",
    "poll",
    "running",
]
