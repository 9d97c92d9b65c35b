"""Fault injection for the S3 side, and vidproxy or moto as real processes.

- ``TcpFault``: a byte relay on a fixed loopback port in front of an S3 endpoint.
  ``kill()`` aborts every connection through it and stops listening (new ones are
  refused, as from a dead S3); ``revive()`` listens on the same port again. The
  endpoint behind it keeps its state, so "S3 is back" sees the same objects.
- ``S3Faults``: an HTTP proxy in front of an S3 endpoint whose ``rule`` sees every
  request and may answer in S3's place (an XML error) instead of forwarding it,
  and whose ``stall`` picks requests it reads and then never answers.
- ``VidproxyProcess``: ``python -m vidproxy serve`` configured by ``VIDPROXY_*``
  variables, its log in a file; for signals, exit codes, RSS and what gets logged.
- ``MotoProcess``: a ``moto_server`` of one's own, for tests that load it hard.

Chain them as a test needs: vidproxy -> TcpFault -> S3Faults (or ``s3_proxy``,
which can hold or cut a GET body) -> moto.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import resource
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cache_rig import wait_for as apoll  # noqa: F401 - the one async poll of the rigs
from conftest import free_port, wait_for_port
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


# ---- S3 as seen by boto3 ---------------------------------------------------------------


def pending_uploads(s3: Any, bucket: str) -> list[str]:
    """The keys of the bucket's unfinished multipart uploads."""
    return [u["Key"] for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def object_bytes(s3: Any, bucket: str, key: str) -> bytes | None:
    try:
        return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except s3.exceptions.NoSuchKey:
        return None


# ---- processes ------------------------------------------------------------------------


def http_status(url: str, method: str = "GET", timeout: float = 2.0) -> int | None:
    """The status of one request, or None while nothing answers."""
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def poll(condition: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s: {what}")
        time.sleep(POLL_INTERVAL)


class VidproxyProcess:
    """``python -m vidproxy serve`` with ``env`` on top of a clean environment;
    ``open_files`` sets its RLIMIT_NOFILE (soft and hard) before it starts."""

    def __init__(
        self,
        workdir: Path,
        env: Mapping[str, str],
        args: tuple[str, ...] = (),
        open_files: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.port = int(env.get("VIDPROXY_SERVER_PORT") or free_port())
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"vidproxy-{self.port}.log"
        self._env = {k: v for k, v in os.environ.items() if not k.startswith("VIDPROXY_")}
        self._env.update(
            {
                "VIDPROXY_SERVER_HOST": "127.0.0.1",
                "VIDPROXY_SERVER_PORT": str(self.port),
                "PYTHONUNBUFFERED": "1",
            }
        )
        self._env.update(env)
        self._args = args
        self._open_files = open_files
        self.proc: subprocess.Popen[bytes] | None = None

    def _limit_open_files(self) -> None:
        if self._open_files is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (self._open_files, self._open_files))

    def launch(self) -> None:
        """Start the process and return at once."""
        argv = [sys.executable, "-m", "vidproxy", "serve", *self._args]
        # cwd without a config.toml, so only the environment configures it.
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv,
                cwd=self.workdir,
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=self._limit_open_files if self._open_files is not None else None,
            )

    def start(self, probe: str = "/readyz") -> VidproxyProcess:
        """Start; return once ``probe`` answers 200 (``""``: once the port accepts)."""
        self.launch()
        try:
            if probe:
                poll(self._answers(probe), f"vidproxy {probe} 200", START_TIMEOUT)
            else:
                wait_for_port(self.port, START_TIMEOUT, self.proc)
        except BaseException:
            self.kill()
            raise
        return self

    def _answers(self, probe: str) -> Callable[[], bool]:
        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"vidproxy exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            return http_status(self.url + probe) == 200

        return ready

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = STOP_TIMEOUT) -> int:
        """The exit code; fails the test if the process is still running after ``timeout``."""
        assert self.proc is not None
        try:
            return int(self.proc.wait(timeout=timeout))
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(
                f"vidproxy still running {timeout}s after the signal:\n{self.log()[-3000:]}"
            )

    async def await_exit(self, within: float = STOP_TIMEOUT) -> int:
        return await asyncio.to_thread(self.wait, within)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> int:
        """SIGTERM and wait; SIGKILL if it will not go."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.kill()
        return int(self.proc.returncode)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def rss_bytes(self) -> int:
        """VmRSS from /proc; 0 once the process is gone."""
        try:
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return 0
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0


@contextlib.asynccontextmanager
async def running(
    process: VidproxyProcess, probe: str = "/readyz"
) -> AsyncIterator[VidproxyProcess]:
    await asyncio.to_thread(process.start, probe)
    try:
        yield process
    finally:
        await asyncio.to_thread(process.stop)


class MotoProcess:
    """A ``moto_server`` of its own on a free loopback port."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> MotoProcess:
        exe = str(Path(sys.executable).with_name("moto_server"))
        with self._log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [exe, "-H", "127.0.0.1", "-p", str(self.port)], stdout=log, stderr=log
            )
        wait_for_port(self.port, START_TIMEOUT, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
