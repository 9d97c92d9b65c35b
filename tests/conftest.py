"""Fixtures that start real servers: moto in server mode, and vidproxy itself.

Every server binds 127.0.0.1 on a free port and is stopped by the fixture
that started it. The servers themselves are in tests/rigs/ (tests/README.md
names each); this file holds the fixtures every test module can ask for.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from botocore.config import Config as BotoConfig
from multidict import CIMultiDict
from rigs.app import RunAppServer
from rigs.moto import MotoProcess
from rigs.polling import POLL_INTERVAL, POLL_TIMEOUT, apoll
from rigs.processes import free_port, wait_for_port
from rigs.s3 import pending_uploads as s3_uploads
from rigs.vidproxy import VidproxyProcess, server_settings

from vidproxy.cache import Clock
from vidproxy.config import Config, load_config
from vidproxy.units import MiB
from vidproxy.web.app import create_app
from vidproxy.web.protocol import forget_middleware_chains

# Imported from here by test modules (and kept so): the rigs are where they live.
__all__ = ["POLL_INTERVAL", "POLL_TIMEOUT", "RunAppServer", "free_port", "wait_for_port"]

# Tests use the smallest part S3 allows, so multipart paths run on small bodies.
PART_SIZE = 5 * MiB
# Every vidproxy the tests start runs without the stale-upload sweep, so its
# requests stay out of what a test counts or a fault rule sees (the sweeper's own
# tests, tests/test_sweeper.py, turn it on).
NO_STALE_UPLOAD_SWEEP: dict[str, Any] = {"abort_stale_uploads_after": 0}
NO_STALE_UPLOAD_SWEEP_ENV = {"VIDPROXY_S3_ABORT_STALE_UPLOADS_AFTER": "0"}
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


@pytest.fixture(scope="session", autouse=True)
def aws_env() -> Iterator[None]:
    """Credentials for the local S3 endpoints; never real ones."""
    saved = {k: os.environ.get(k) for k in AWS_ENV}
    os.environ.update(AWS_ENV)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True)
def forget_finished_apps() -> Iterator[None]:
    """aiohttp memoises middleware chains in a module-level LRU of 1024 entries,
    which keeps every Application, and through it each S3 client, alive: ~12 MB
    per started vidproxy and seconds of teardown at exit. Production starts one
    app; a test run starts hundreds, so forget them after each test."""
    yield
    forget_middleware_chains()


@pytest.fixture(scope="session")
def moto_endpoint(aws_env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto in server mode, as its own process on a free loopback port."""
    with MotoProcess(tmp_path_factory.mktemp("moto") / "moto.log").start() as moto:
        yield moto.url


@pytest.fixture
def s3(moto_endpoint: str) -> Any:
    """A plain boto3 client on the same endpoint, to inspect what vidproxy left in S3."""
    return boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        config=BotoConfig(retries={"max_attempts": 1}),
    )


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["fs", "s3"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def moto_url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue("moto_endpoint"))


@pytest.fixture
def make_config(tmp_path: Path, request: pytest.FixtureRequest) -> Callable[..., Config]:
    """Build a Config for ``backend`` ("fs" or "s3") with section overrides."""

    def make(backend: str, **sections: dict[str, Any]) -> Config:
        layers: dict[str, dict[str, Any]] = {
            "fs": {"dir": str(tmp_path / "data")},
            "cache": {"dir": str(tmp_path / "cache")},
            "s3": {
                "part_size": PART_SIZE,
                "upload_concurrency": 2,
                "max_attempts": 1,
                **NO_STALE_UPLOAD_SWEEP,
            },
        }
        if backend == "s3":
            layers["s3"].update(
                endpoint_url=request.getfixturevalue("moto_endpoint"),
                bucket=request.getfixturevalue("bucket"),
                addressing_style="path",
            )
        for section, values in sections.items():
            layers.setdefault(section, {}).update(values)
        talks_to_moto = backend == "s3" and layers["s3"]["endpoint_url"] == moto_url(request)
        if talks_to_moto and "max_attempts" not in sections.get("s3", {}):
            # moto is not thread-safe within one multipart upload: an abort that
            # races a cancelled part still being stored can answer 500 ("dictionary
            # changed size during iteration"). S3 documents that race too, and
            # vidproxy's default retries cover it; tests not about faults allow one.
            layers["s3"]["max_attempts"] = 2
        return load_config(None, env={}, overrides=layers)

    return make


@pytest.fixture
async def start_vidproxy(
    aiohttp_client: Callable[..., Any],
) -> Callable[..., Any]:
    """Start vidproxy (from a Config, or an app a test built) on a real loopback
    socket, run as production runs it; returns an aiohttp TestClient. Options:
    ``handler_cancellation``, ``access_log`` (see rigs.app.RunAppServer); ``clock``
    (a ``manual_clock.ManualClock``, say) replaces the system's for the cache."""

    async def start(
        what: Config | web.Application, *, clock: Clock | None = None, **options: bool
    ) -> TestClient[Any, Any]:
        app = create_app(what, clock=clock) if isinstance(what, Config) else what
        return await aiohttp_client(RunAppServer(app, **options))

    return start


@pytest.fixture
async def client(
    backend: str, make_config: Callable[..., Config], start_vidproxy: Callable[..., Any]
) -> AsyncIterator[TestClient[Any, Any]]:
    """vidproxy on each backend in turn (fs, then s3 against moto)."""
    yield await start_vidproxy(make_config(backend))


# ---- helpers for what aiohttp's client will not do --------------------------

# A raw client gives up on an answer after this long instead of hanging the suite.
RESPONSE_TIMEOUT = 10.0


@dataclass
class RawResponse:
    status: int
    headers: CIMultiDict[str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class RawConnection:
    """One HTTP/1.1 connection written byte by byte: for requests aiohttp's client
    would fix up (no length at all, short bodies) and for clients that hang up."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def send_head(self, method: str, target: str, headers: dict[str, str]) -> None:
        lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        await self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    async def send(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    def shutdown_write(self) -> None:
        """Half-close: send FIN now, as a client whose body ran out would."""
        self._writer.write_eof()

    async def close(self) -> None:
        self._writer.close()
        with suppress(ConnectionError):
            await self._writer.wait_closed()

    async def response(self, *, head: bool = False) -> RawResponse:
        """The next final response (interim 1xx ones are skipped)."""
        async with asyncio.timeout(RESPONSE_TIMEOUT):
            while True:
                status, headers = await self.read_head()
                if status >= 200:
                    break
            if head or status in (204, 304):
                return RawResponse(status, headers, b"")
            length = headers.get("Content-Length")
            if length is not None:
                body = await self._reader.readexactly(int(length))
            else:
                body = await self._reader.read()
        return RawResponse(status, headers, body)

    async def read_until_closed(self, within: float = RESPONSE_TIMEOUT) -> bytes | None:
        """Everything the server sends until it closes; None if still open after ``within``."""
        received = bytearray()
        try:
            async with asyncio.timeout(within):
                while piece := await self._reader.read(64 * 1024):
                    received += piece
        except TimeoutError:
            return None
        except ConnectionError:
            pass  # closed with a reset: what came before it still counts
        return bytes(received)

    async def read_head(self) -> tuple[int, CIMultiDict[str]]:
        """The status and headers of the next response, interim ones included."""
        async with asyncio.timeout(RESPONSE_TIMEOUT):
            raw = await self._reader.readuntil(b"\r\n\r\n")
        status_line, *lines = raw.decode("latin-1").split("\r\n")
        headers: CIMultiDict[str] = CIMultiDict()
        for line in filter(None, lines):
            name, _, value = line.partition(":")
            headers.add(name.strip(), value.strip())
        return int(status_line.split()[1]), headers


Connect = Callable[[TestClient[Any, Any]], Awaitable[RawConnection]]


@pytest.fixture
async def raw_connect() -> AsyncIterator[Connect]:
    """Open raw connections to a started vidproxy; all are closed at teardown."""
    opened: list[RawConnection] = []

    async def connect(client: TestClient[Any, Any]) -> RawConnection:
        reader, writer = await asyncio.open_connection(client.host, client.port)
        connection = RawConnection(reader, writer)
        opened.append(connection)
        return connection

    yield connect
    for connection in opened:
        await connection.close()


def chunked(body: bytes, piece: int = 64 * 1024) -> bytes:
    """``body`` in HTTP/1.1 chunked coding, terminator included."""
    out = bytearray()
    for start in range(0, len(body), piece):
        chunk = body[start : start + piece]
        out += b"%x\r\n" % len(chunk) + chunk + b"\r\n"
    return bytes(out + b"0\r\n\r\n")


@pytest.fixture
def wait_until() -> Callable[..., Awaitable[None]]:
    """Poll a condition (sync or async) until it holds; fail after ``within`` seconds:
    ``await wait_until(condition, what, within=POLL_TIMEOUT)``."""
    return apoll


@pytest.fixture
def pending_uploads(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Callable[[], Awaitable[list[str]]]:
    """What the backend holds of unfinished uploads: S3 multipart uploads in the
    test bucket (asked of moto over HTTP), or the fs store's temp files."""
    if backend == "s3":
        s3_client = request.getfixturevalue("s3")
        bucket_name = request.getfixturevalue("bucket")

        async def in_s3() -> list[str]:
            return await asyncio.to_thread(s3_uploads, s3_client, bucket_name)

        return in_s3
    tmp_dir = tmp_path / "data" / "tmp"

    async def in_fs() -> list[str]:
        return [p.name for p in tmp_dir.iterdir()] if tmp_dir.is_dir() else []

    return in_fs


StartProcess = Callable[..., VidproxyProcess]


@pytest.fixture
def vidproxy_process(tmp_path: Path) -> Iterator[StartProcess]:
    """``vidproxy_process(env, open_files=None, **server)``: ``vidproxy serve`` as a
    process configured by ``env`` plus ``VIDPROXY_SERVER_*`` for each ``server``
    setting, started and ready; every one is stopped at teardown."""
    started: list[VidproxyProcess] = []

    def start(env: dict[str, str], open_files: int | None = None, **server: Any) -> VidproxyProcess:
        process = VidproxyProcess(
            tmp_path, {**env, **server_settings(**server)}, open_files=open_files
        )
        started.append(process)
        return process.start()

    try:
        yield start
    finally:
        for process in started:
            process.stop()
