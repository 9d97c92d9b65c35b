"""Malformed credentials, whatever their bytes, get a 401 or 403 in JSON and at
most one line in the log (the access line): never a 500 with a traceback.

The cases that once answered 500: a non-ASCII ``sig`` (``hmac.compare_digest``
refuses non-ASCII str), an ``expires`` of 5,000 digits (``int()`` refuses 4,300
and more), a superscript digit (``str.isdigit`` takes it, ``int()`` does not), and
non-UTF-8 bytes after ``Bearer`` (they came back as surrogates that did not encode).
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_from_bytes

import pytest
from aiohttp.test_utils import TestClient
from conftest import Connect
from fault_rig import VidproxyProcess, poll
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from vidproxy.config import Config

Client = TestClient[Any, Any]

WRITE_TOKEN = "malformed-write-9d1c"
READ_TOKEN = "malformed-read-44b7"
SIGNING_KEY = "malformed-signing-key-e2"
AUTH = {"write_tokens": [WRITE_TOKEN], "read_tokens": [READ_TOKEN], "signing_key": SIGNING_KEY}
KEY = "clip.mp4"
FUTURE = 4_000_000_000  # UNIX seconds, in 2096
HEX_SIG = "ab" * 32
SOCKET_TIMEOUT = 10.0  # seconds for one answer
LOG_TIMEOUT = 10.0  # seconds for the access log to catch up

# (query, Authorization bytes or None): the four reported 500s and their neighbours.
REPORTED = {
    "non-ASCII sig": (f"expires={FUTURE}&sig=%C3%A9", None),
    "invalid UTF-8 sig": (f"expires={FUTURE}&sig=%FF", None),
    "5,000-digit expires": ("expires=" + "9" * 5000 + f"&sig={HEX_SIG}", None),
    "superscript expires": (f"expires=%C2%B2&sig={HEX_SIG}", None),
    "Arabic-Indic expires": (f"expires=%D9%A1&sig={HEX_SIG}", None),
    "non-UTF-8 bearer": ("", b"Bearer \xff\xfe\xc3"),
    "UTF-8 bearer": ("", "Bearer jéton".encode()),
}
# Every way in that checks credentials: reads, writes (the early refusal before
# 100 Continue included), the alias, deletes and /sign.
TARGETS = [
    ("GET", f"/videos/{KEY}", {}),
    ("HEAD", f"/videos/{KEY}", {}),
    ("PUT", f"/videos/{KEY}", {"Content-Length": "5", "Expect": "100-continue"}),
    ("POST", f"/upload/{KEY}", {"Content-Length": "5", "Expect": "100-continue"}),
    ("DELETE", f"/videos/{KEY}", {}),
    ("POST", "/sign", {"Content-Length": "2"}),
]


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


def raw_request(method: str, path: str, headers: dict[str, str], auth: bytes | None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1"]
    lines += [f"{name}: {value}".encode() for name, value in headers.items()]
    if auth is not None:
        lines.append(b"Authorization: " + auth)
    return b"\r\n".join([*lines, b"Connection: close", b"", b""])


@pytest.mark.parametrize("case", REPORTED)
@pytest.mark.parametrize(("method", "path", "headers"), TARGETS, ids=lambda t: str(t))
async def test_the_reported_credentials_get_a_json_refusal_and_no_log(
    case: str,
    method: str,
    path: str,
    headers: dict[str, str],
    make_config: Callable[..., Config],
    start_vidproxy: Callable[[Config], Any],
    raw_connect: Connect,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client: Client = await start_vidproxy(make_config("fs", auth=AUTH))
    query, auth = REPORTED[case]
    connection = await raw_connect(client)
    target = f"{path}?{query}" if query else path
    await connection.send(raw_request(method, target, headers, auth))
    response = await connection.response(head=method == "HEAD")
    assert response.status in (401, 403), response.body
    if method != "HEAD":
        assert json.loads(response.body)["error"] in ("unauthorized", "forbidden")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


# ---- any bytes, against the real process ---------------------------------------------


@pytest.fixture(scope="module")
def process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VidproxyProcess]:
    workdir = tmp_path_factory.mktemp("malformed")
    env = {
        "VIDPROXY_FS_DIR": str(workdir / "data"),
        "VIDPROXY_AUTH_WRITE_TOKENS": WRITE_TOKEN,
        "VIDPROXY_AUTH_READ_TOKENS": READ_TOKEN,
        "VIDPROXY_AUTH_SIGNING_KEY": SIGNING_KEY,
    }
    vidproxy = VidproxyProcess(workdir, env).start()
    try:
        yield vidproxy
    finally:
        vidproxy.stop()


def send(process: VidproxyProcess, request: bytes, *, head: bool = False) -> Answer:
    """One request on its own connection; the answer as far as its Content-Length
    (a refused upload's connection stays open for the body it never got)."""
    with socket.create_connection(("127.0.0.1", process.port), timeout=SOCKET_TIMEOUT) as sock:
        sock.sendall(request)
        reader = sock.makefile("rb")
        status = int(reader.readline().split(b" ", 2)[1])
        length = 0
        while (line := reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return Answer(status, b"" if head else reader.read(length))


def encoded(data: bytes) -> str:
    return quote_from_bytes(data, safe="")


MAX_DRAWN_DIGITS = 3500
# Values a query can carry: any bytes, any text (digits of every script among
# them), long runs of ASCII digits, and near-misses of the real format.
query_values = st.one_of(
    st.binary(max_size=80).map(encoded),
    st.text(max_size=40).map(lambda text: quote(text, safe="")),
    st.text(st.characters(categories=["Nd", "No"]), max_size=20).map(lambda t: quote(t)),
    # Two such values must still fit aiohttp's 8190-byte request line; the
    # 5,000-digit case (past int()'s digit limit) is an explicit example below.
    st.integers(min_value=0, max_value=MAX_DRAWN_DIGITS).map(lambda n: "9" * n),
    st.text("0123456789abcdefABCDEF", min_size=63, max_size=65),
)
# Any header bytes aiohttp's parser lets through to vidproxy: all but the control
# characters (tab excepted), which it refuses itself (400 malformed_request, tested
# in test_auth.py) before any credential is looked at.
_PARSER_REFUSES = frozenset(range(0x20)) - {0x09} | {0x7F}
header_values = st.binary(max_size=120).filter(lambda b: not _PARSER_REFUSES & set(b))
PROPERTY = settings(
    deadline=None, max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def test_any_credential_bytes_get_a_refusal_and_at_most_a_log_line(
    process: VidproxyProcess,
) -> None:
    # Lines of start-up (the rig's readiness polls) may still be on their way:
    # count from a logged sentinel, not from whatever the log holds by now.
    assert send(process, raw_request("GET", "/healthz?before=1", {}, None)).status == 200
    poll(lambda: "/healthz?before=" in process.log(), "the first sentinel is logged", LOG_TIMEOUT)
    log_before = len(process.log().splitlines())
    sent = 0

    @PROPERTY
    @given(
        target=st.sampled_from(TARGETS),
        expires=st.none() | query_values,
        sig=st.none() | query_values,
        auth=st.none() | header_values.map(lambda b: b"Bearer " + b) | header_values,
    )
    @example(target=TARGETS[0], expires="9" * 5000, sig=HEX_SIG, auth=None)
    @example(target=TARGETS[2], expires=None, sig=None, auth=b"Bearer \xff")
    def refused(
        target: tuple[str, str, dict[str, str]],
        expires: str | None,
        sig: str | None,
        auth: bytes | None,
    ) -> None:
        nonlocal sent
        method, path, headers = target
        query = "&".join(
            f"{n}={v}" for n, v in (("expires", expires), ("sig", sig)) if v is not None
        )
        request = raw_request(method, f"{path}?{query}", headers, auth)
        answer = send(process, request, head=method == "HEAD")
        sent += 1
        assert answer.status in (401, 403), answer
        if method != "HEAD":
            assert "error" in json.loads(answer.body)

    refused()
    # The access log is written in order: once this request is in, all are.
    assert send(process, raw_request("GET", "/healthz?sentinel=1", {}, None)).status == 200
    poll(lambda: "/healthz?sentinel=" in process.log(), "the sentinel is logged", LOG_TIMEOUT)
    new_lines = process.log().splitlines()[log_before:]
    assert [line for line in new_lines if "Traceback" in line or " ERROR " in line] == []
    assert len(new_lines) <= sent + 1, "\n".join(new_lines[-20:])
    assert sent >= PROPERTY.max_examples // 2  # the property really sent requests
