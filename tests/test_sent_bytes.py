"""The access log's byte count and ``vidproxy_sent_bytes_total`` say what the
socket took, not the length an answer declared: a client that reads a little of
a large object and hangs up is counted for that little (plus what the kernel's
buffers took), over a real socket, on the sendfile path (fs) and the streamed
one (S3 without the cache)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from aiohttp.web_runner import AppRunner
from conftest import RunAppServer
from test_metrics import sample

from vidproxy.config import Config
from vidproxy.units import MiB
from vidproxy.web.app import create_app
from vidproxy.web.logs import AccessLogger

Client = TestClient[Any, Any]
Wait = Callable[..., Awaitable[None]]

KEY = "sent/big.bin"
SIZE = 64 * MiB
READ = 1000  # body bytes the impatient client reads before it hangs up
# What loopback buffers can hold beyond that: the client's receive buffer (made
# small below), the server's send buffer (autotuned up to tcp_wmem's 4 MiB, counted
# twice for overhead) and the transport's own buffer. Far below SIZE either way.
BUFFERED_AT_MOST = 16 * MiB
CLIENT_RCVBUF = 64 * 1024


class LoggedServer(RunAppServer):
    """The app as production runs it, with vidproxy's access log."""

    async def _make_runner(self, **kwargs: Any) -> AppRunner:
        kwargs["access_log_class"] = AccessLogger
        return await super()._make_runner(**kwargs)


@pytest.fixture
def start_logged(aiohttp_client: Callable[..., Any]) -> Callable[[Config], Awaitable[Client]]:
    async def start(config: Config) -> Client:
        return await aiohttp_client(LoggedServer(create_app(config)))

    return start


def access_records(caplog: pytest.LogCaptureFixture, method: str) -> list[dict[str, Any]]:
    return [
        record.fields  # type: ignore[attr-defined]
        for record in caplog.records
        if record.name == "aiohttp.access"
        and record.fields["method"] == method  # type: ignore[attr-defined]
        and record.fields["path"] == f"/videos/{KEY}"  # type: ignore[attr-defined]
    ]


def read_a_little_and_hang_up(port: int) -> int:
    """GET the object, read READ body bytes, close with the rest unread (an RST)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_RCVBUF)
        sock.connect(("127.0.0.1", port))
        sock.sendall(f"GET /videos/{KEY} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        received = b""
        while b"\r\n\r\n" not in received or len(received.partition(b"\r\n\r\n")[2]) < READ:
            received += sock.recv(READ)
        return len(received.partition(b"\r\n\r\n")[2])


def config_for(backend: str, make_config: Callable[..., Config]) -> Config:
    if backend == "fs":
        return make_config("fs")
    return make_config("s3", cache={"enabled": False})  # streamed, chunk by chunk


@pytest.mark.parametrize("backend", ["fs", "s3"])
async def test_a_client_that_hangs_up_is_counted_for_what_it_was_sent(
    backend: str,
    make_config: Callable[..., Config],
    start_logged: Callable[[Config], Awaitable[Client]],
    caplog: pytest.LogCaptureFixture,
    wait_until: Wait,
) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    client = await start_logged(config_for(backend, make_config))
    assert (await client.put(f"/videos/{KEY}", data=os.urandom(SIZE))).status == 201
    port = client.server.port
    assert port is not None
    read = await asyncio.to_thread(read_a_little_and_hang_up, port)
    assert read >= READ

    async def logged() -> bool:
        return bool(access_records(caplog, "GET"))

    await wait_until(logged, "the cut GET is in the access log")
    [fields] = access_records(caplog, "GET")
    assert read <= fields["bytes"] <= BUFFERED_AT_MOST, fields
    sent = sample(await (await client.get("/metrics")).text(), "vidproxy_sent_bytes_total")
    assert sent == fields["bytes"]


@pytest.mark.parametrize("backend", ["fs", "s3"])
async def test_a_whole_answer_counts_its_body_and_a_head_counts_none(
    backend: str,
    make_config: Callable[..., Config],
    start_logged: Callable[[Config], Awaitable[Client]],
    caplog: pytest.LogCaptureFixture,
    wait_until: Wait,
) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    client = await start_logged(config_for(backend, make_config))
    body = os.urandom(3 * MiB + 5)
    assert (await client.put(f"/videos/{KEY}", data=body)).status == 201
    assert await (await client.get(f"/videos/{KEY}")).read() == body
    ranged = await client.get(f"/videos/{KEY}", headers={"Range": "bytes=10-1009"})
    assert await ranged.read() == body[10:1010]
    assert (await client.head(f"/videos/{KEY}")).status == 200

    async def all_logged() -> bool:
        return len(access_records(caplog, "GET")) == 2 and bool(access_records(caplog, "HEAD"))

    await wait_until(all_logged, "the answers are in the access log")
    assert [f["bytes"] for f in access_records(caplog, "GET")] == [len(body), 1000]
    assert [f["bytes"] for f in access_records(caplog, "HEAD")] == [0]
    sent = sample(await (await client.get("/metrics")).text(), "vidproxy_sent_bytes_total")
    assert sent == len(body) + 1000
