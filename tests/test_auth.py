"""Access control over HTTP: bearer tokens, signed URLs, POST /sign, ``vidproxy sign``,
secrets from env and files, and what never reaches a log.

Signatures are computed here from the documented formula (hex HMAC-SHA256 of
``signing_key`` over ``METHOD\\nKEY\\nEXPIRES``), not with vidproxy's own code.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import parse_qs, quote, urlsplit

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request
from conftest import PART_SIZE, Connect
from fault_rig import VidproxyProcess, payload, running
from rigs.objects import stored

from vidproxy import auth as auth_module
from vidproxy.__main__ import main as cli_main
from vidproxy.__main__ import warn_if_exposed
from vidproxy.config import Config, ConfigError, load_config
from vidproxy.web.logs import access_fields

Client = TestClient[Any, Any]
Pending = Callable[[], Awaitable[list[str]]]
Wait = Callable[..., Awaitable[None]]

WRITE_TOKEN = "wtok-5f2a9c71e0"
READ_TOKEN = "rtok-b83d04aa6c"
SIGNING_KEY = "skey-1e7d93c0f4b2a6"
AUTH = {"write_tokens": [WRITE_TOKEN], "read_tokens": [READ_TOKEN], "signing_key": SIGNING_KEY}
WRITER = {"Authorization": f"Bearer {WRITE_TOKEN}"}
READER = {"Authorization": f"Bearer {READ_TOKEN}"}
KEY = "clip.mp4"
BODY = payload(20_000, 7)
ANSWER_WITHIN = 3.0  # seconds: a refusal never waits for a body


def signature(method: str, key: str, expires: int, signing_key: str = SIGNING_KEY) -> str:
    message = f"{method}\n{key}\n{expires}".encode()
    return hmac.new(signing_key.encode(), message, hashlib.sha256).hexdigest()


def signed(key: str, method: str = "GET", ttl: int = 60, expires: int | None = None) -> str:
    expires = int(time.time()) + ttl if expires is None else expires
    return f"/videos/{quote(key, safe='/')}?expires={expires}&sig={signature(method, key, expires)}"


async def assert_error(response: aiohttp.ClientResponse, status: int, code: str) -> None:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    assert (await response.json())["error"] == code


@pytest.fixture
async def guarded(make_config: Callable[..., Config], start_vidproxy: Callable[..., Any]) -> Client:
    """fs-backed vidproxy with write tokens, read tokens and a signing key; holds KEY."""
    client = await start_vidproxy(make_config("fs", auth=AUTH))
    response = await client.put(f"/videos/{KEY}", data=BODY, headers=WRITER)
    assert response.status == 201
    return client


@pytest.fixture
async def public_reads(
    make_config: Callable[..., Config], start_vidproxy: Callable[..., Any]
) -> Client:
    """Write tokens only: anyone may read."""
    auth = {"write_tokens": [WRITE_TOKEN], "signing_key": SIGNING_KEY}
    client = await start_vidproxy(make_config("fs", auth=auth))
    assert (await client.put(f"/videos/{KEY}", data=BODY, headers=WRITER)).status == 201
    return client


WRITES = [
    ("PUT", f"/videos/{KEY}"),
    ("POST", "/videos"),
    ("DELETE", f"/videos/{KEY}"),
    ("POST", "/upload"),
    ("POST", f"/upload/{KEY}"),
]


# ---- write tokens ----------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), WRITES)
@pytest.mark.parametrize(
    "authorization", [None, "Basic d3RvazpzZWNyZXQ=", "Bearer", "Bearer   ", WRITE_TOKEN]
)
async def test_write_without_a_bearer_token_is_401(
    guarded: Client, method: str, path: str, authorization: str | None
) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await guarded.request(method, path, data=b"x", headers=headers)
    await assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert await stored(guarded, KEY, **WRITER) == BODY


@pytest.mark.parametrize(("method", "path"), WRITES)
@pytest.mark.parametrize("token", ["wrong", WRITE_TOKEN + "x", WRITE_TOKEN[:-1]])
async def test_write_with_an_unknown_token_is_401_with_its_own_message(
    guarded: Client, method: str, path: str, token: str
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    response = await guarded.request(method, path, data=b"x", headers=headers)
    await assert_error(response, 401, "unauthorized")
    assert (await response.json())["message"] == "the token is not one this server knows"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert await stored(guarded, KEY, **WRITER) == BODY


@pytest.mark.parametrize(("method", "path"), WRITES)
async def test_write_with_a_read_token_is_403(guarded: Client, method: str, path: str) -> None:
    response = await guarded.request(method, path, data=b"x", headers=READER)
    await assert_error(response, 403, "forbidden")
    assert (await response.json())["message"] == "a read token cannot write"
    assert await stored(guarded, KEY, **WRITER) == BODY


async def test_write_token_may_write_and_delete(guarded: Client) -> None:
    new = payload(1000, 8)
    assert (await guarded.put("/videos/other", data=new, headers=WRITER)).status == 201
    assert await stored(guarded, "other", **WRITER) == new
    posted = await guarded.post(
        "/videos", data=new, headers={"authorization": "bearer " + WRITE_TOKEN}
    )
    assert posted.status == 201
    assert (await guarded.delete("/videos/other", headers=WRITER)).status == 204
    assert await stored(guarded, "other", **WRITER) is None


@pytest.mark.parametrize(
    ("headers", "status"), [({}, 401), ({"Authorization": "Bearer nope"}, 401), (READER, 403)]
)
async def test_refused_upload_gets_no_100_continue(
    guarded: Client, raw_connect: Connect, headers: dict[str, str], status: int
) -> None:
    connection = await raw_connect(guarded)
    head = {"Content-Length": str(10 * PART_SIZE), "Expect": "100-continue", **headers}
    await connection.send_head("PUT", "/videos/new", head)
    async with asyncio.timeout(ANSWER_WITHIN):
        first, _ = await connection.read_head()
    assert first == status  # the refusal itself, never "100 Continue" first
    assert await stored(guarded, "new", **WRITER) is None


@pytest.mark.parametrize("framing", ["Content-Length", "chunked"])
async def test_refused_upload_is_answered_without_its_body(
    backend: str,
    make_config: Callable[..., Config],
    start_vidproxy: Callable[..., Any],
    raw_connect: Connect,
    pending_uploads: Pending,
    framing: str,
) -> None:
    # No Expect: the middleware refuses before the handler reads a byte of the body,
    # so the answer comes although the client has sent nothing after the head.
    client = await start_vidproxy(make_config(backend, auth=AUTH))
    connection = await raw_connect(client)
    length = {"Content-Length": str(3 * PART_SIZE)}
    head = length if framing == "Content-Length" else {"Transfer-Encoding": "chunked"}
    await connection.send_head("PUT", f"/videos/{KEY}", head)
    async with asyncio.timeout(ANSWER_WITHIN):
        response = await connection.response()
    assert (response.status, response.json()["error"]) == (401, "unauthorized")
    assert await pending_uploads() == []
    assert await stored(client, KEY, **WRITER) is None


# ---- read tokens -----------------------------------------------------------------------

READS = [("GET", f"/videos/{KEY}"), ("HEAD", f"/videos/{KEY}"), ("GET", "/videos"),
         ("GET", f"/download/{KEY}")]  # fmt: skip


@pytest.mark.parametrize(("method", "path"), READS)
async def test_reads_need_a_token_once_read_tokens_are_set(
    guarded: Client, method: str, path: str
) -> None:
    assert (await guarded.request(method, path)).status == 401
    assert (
        await guarded.request(method, path, headers={"Authorization": "Bearer x"})
    ).status == 401
    assert (await guarded.request(method, path, headers=READER)).status == 200
    assert (await guarded.request(method, path, headers=WRITER)).status == 200  # writers read


async def test_read_token_answers_are_json(guarded: Client) -> None:
    await assert_error(await guarded.get(f"/videos/{KEY}"), 401, "unauthorized")
    wrong = await guarded.get(f"/videos/{KEY}", headers={"Authorization": "Bearer x"})
    await assert_error(wrong, 401, "unauthorized")


@pytest.mark.parametrize(("method", "path"), READS)
async def test_reads_are_public_without_read_tokens(
    public_reads: Client, method: str, path: str
) -> None:
    response = await public_reads.request(method, path)
    assert response.status == 200
    if method == "GET" and path.endswith(KEY):
        assert await response.read() == BODY


async def test_public_reads_still_refuse_writes(public_reads: Client) -> None:
    await assert_error(await public_reads.put("/videos/x", data=b"x"), 401, "unauthorized")


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
async def test_probes_need_no_token(guarded: Client, path: str) -> None:
    assert (await guarded.get(path)).status == 200


# ---- signed URLs -------------------------------------------------------------------------


async def test_signed_get_by_the_documented_formula_serves_the_bytes(guarded: Client) -> None:
    response = await guarded.get(signed(KEY))
    assert (response.status, await response.read()) == (200, BODY)


async def test_signed_get_also_allows_head(guarded: Client) -> None:
    response = await guarded.head(signed(KEY))
    assert (response.status, response.headers["Content-Length"]) == (200, str(len(BODY)))


async def test_signed_get_of_a_unicode_key_with_spaces(guarded: Client) -> None:
    key = "dir/ä b+c (1).mp4"
    response = await guarded.put(f"/videos/{quote(key, safe='/')}", data=BODY, headers=WRITER)
    assert response.status == 201
    response = await guarded.get(signed(key))
    assert (response.status, await response.read()) == (200, BODY)


async def test_signed_put_uploads_without_a_token(guarded: Client) -> None:
    new = payload(PART_SIZE + 10, 9)
    response = await guarded.put(signed("up.mp4", "PUT"), data=new)
    assert response.status == 201
    assert await stored(guarded, "up.mp4", **WRITER) == new


async def test_signed_put_with_expect_gets_100_continue(
    guarded: Client, raw_connect: Connect
) -> None:
    connection = await raw_connect(guarded)
    head = {"Content-Length": "5", "Expect": "100-continue"}
    await connection.send_head("PUT", signed("up.mp4", "PUT"), head)
    status, _ = await connection.read_head()
    assert status == 100
    await connection.send(b"hello")
    assert (await connection.response()).status == 201
    assert await stored(guarded, "up.mp4", **WRITER) == b"hello"


async def test_bad_signed_put_gets_403_before_100_continue(
    guarded: Client, raw_connect: Connect
) -> None:
    connection = await raw_connect(guarded)
    head = {"Content-Length": str(PART_SIZE), "Expect": "100-continue"}
    await connection.send_head("PUT", signed("up.mp4", "GET"), head)
    async with asyncio.timeout(ANSWER_WITHIN):
        status, _ = await connection.read_head()
    assert status == 403
    assert await stored(guarded, "up.mp4", **WRITER) is None


async def test_a_head_signature_from_sign_serves_head(guarded: Client) -> None:
    answer = await sign_via_api(guarded, {"key": KEY, "method": "HEAD"})
    assert answer["method"] == "HEAD"
    response = await guarded.head(answer["url"])
    assert (response.status, response.headers["Content-Length"]) == (200, str(len(BODY)))


async def test_a_signed_put_url_works_through_the_upload_alias(guarded: Client) -> None:
    # POST /upload/{key} is the old API's PUT /videos/{key}: the same grant covers it.
    alias = signed("up.mp4", "PUT").replace("/videos/", "/upload/", 1)
    response = await guarded.post(alias, data=b"through the alias")
    assert response.status == 201, await response.text()
    assert await stored(guarded, "up.mp4", **WRITER) == b"through the alias"


async def test_the_upload_alias_refuses_a_signed_put_for_another_key_before_100_continue(
    guarded: Client, raw_connect: Connect
) -> None:
    connection = await raw_connect(guarded)
    alias = signed("other.mp4", "PUT").replace("/videos/other.mp4", "/upload/up.mp4", 1)
    await connection.send_head("POST", alias, {"Content-Length": "5", "Expect": "100-continue"})
    async with asyncio.timeout(ANSWER_WITHIN):
        status, _ = await connection.read_head()
    assert status == 403
    assert await stored(guarded, "up.mp4", **WRITER) is None


async def test_the_upload_alias_takes_no_read_signature(guarded: Client) -> None:
    alias = signed("up.mp4", "GET").replace("/videos/", "/upload/", 1)
    await assert_error(await guarded.post(alias, data=b"x"), 403, "forbidden")
    assert await stored(guarded, "up.mp4", **WRITER) is None


async def test_signed_delete_deletes(guarded: Client) -> None:
    assert (await guarded.delete(signed(KEY, "DELETE"))).status == 204
    assert await stored(guarded, KEY, **WRITER) is None


def _tampered() -> dict[str, Callable[[], str]]:
    now = int(time.time())
    good_sig = signature("GET", KEY, now + 60)

    def flip(sig: str) -> str:
        return sig[:-1] + ("0" if sig[-1] != "0" else "1")

    return {
        "expired": lambda: signed(KEY, expires=now - 1),
        "flipped sig": lambda: f"/videos/{KEY}?expires={now + 60}&sig={flip(good_sig)}",
        "later expires": lambda: f"/videos/{KEY}?expires={now + 3600}&sig={good_sig}",
        "other key": lambda: f"/videos/other.mp4?expires={now + 60}&sig={good_sig}",
        "put sig": lambda: signed(KEY, "PUT"),
        "other signing key": lambda: (
            f"/videos/{KEY}?expires={now + 60}&sig={signature('GET', KEY, now + 60, 'k2')}"
        ),
        "empty sig": lambda: f"/videos/{KEY}?expires={now + 60}&sig=",
        "short sig": lambda: f"/videos/{KEY}?expires={now + 60}&sig={good_sig[:32]}",
        "non-hex sig": lambda: f"/videos/{KEY}?expires={now + 60}&sig={'z' * 64}",
        "no expires": lambda: f"/videos/{KEY}?sig={good_sig}",
        "negative expires": lambda: f"/videos/{KEY}?expires=-1&sig={signature('GET', KEY, -1)}",
        "float expires": lambda: f"/videos/{KEY}?expires={now + 60}.0&sig={good_sig}",
        "unicode digits": lambda: f"/videos/{KEY}?expires=١٢٣&sig={good_sig}",
    }


TAMPERED = _tampered()


@pytest.mark.parametrize("case", sorted(TAMPERED))
async def test_expired_or_tampered_signed_url_is_403(guarded: Client, case: str) -> None:
    await assert_error(await guarded.get(TAMPERED[case]()), 403, "forbidden")


async def test_get_signature_does_not_allow_writes(guarded: Client) -> None:
    url = signed(KEY)
    await assert_error(await guarded.put(url, data=b"x"), 403, "forbidden")
    await assert_error(await guarded.delete(url), 403, "forbidden")
    assert await stored(guarded, KEY, **WRITER) == BODY


async def test_a_signature_does_not_open_the_listing(guarded: Client) -> None:
    expires = int(time.time()) + 60
    url = f"/videos?expires={expires}&sig={signature('GET', '', expires)}"
    await assert_error(await guarded.get(url), 401, "unauthorized")


async def test_without_a_signing_key_no_signature_is_valid(
    make_config: Callable[..., Config], start_vidproxy: Callable[..., Any]
) -> None:
    auth = {"write_tokens": [WRITE_TOKEN], "read_tokens": [READ_TOKEN]}
    client = await start_vidproxy(make_config("fs", auth=auth))
    await client.put(f"/videos/{KEY}", data=BODY, headers=WRITER)
    expires = int(time.time()) + 60
    empty_key_sig = signature("GET", KEY, expires, signing_key="")
    await assert_error(
        await client.get(f"/videos/{KEY}?expires={expires}&sig={empty_key_sig}"), 403, "forbidden"
    )


async def test_tokens_and_signatures_are_compared_in_constant_time(guarded: Client) -> None:
    with mock.patch.object(
        auth_module.hmac, "compare_digest", wraps=hmac.compare_digest
    ) as compare:
        await guarded.get(f"/videos/{KEY}", headers={"Authorization": "Bearer guess"})
        assert compare.call_count >= 2  # one per configured token, never a short cut
        compare.reset_mock()
        await guarded.get(TAMPERED["flipped sig"]())
        assert compare.call_count == 1


# ---- POST /sign --------------------------------------------------------------------------


async def sign_via_api(client: Client, body: Any, headers: dict[str, str] = WRITER) -> Any:
    response = await client.post("/sign", data=json.dumps(body), headers=headers)
    assert response.status == 200, await response.text()
    return await response.json()


async def test_sign_answers_a_url_that_works_until_it_expires(guarded: Client) -> None:
    before = int(time.time())
    answer = await sign_via_api(guarded, {"key": KEY, "ttl": 120})
    assert answer["method"] == "GET"
    assert before + 120 <= answer["expires"] <= int(time.time()) + 120
    query = parse_qs(urlsplit(answer["url"]).query)
    assert query["sig"] == [signature("GET", KEY, answer["expires"])]
    response = await guarded.get(answer["url"])
    assert (response.status, await response.read()) == (200, BODY)


async def test_sign_for_put_gives_an_upload_url(guarded: Client) -> None:
    answer = await sign_via_api(guarded, {"key": "dir/new clip.mp4", "method": "put"})
    assert answer["method"] == "PUT"
    assert (await guarded.put(answer["url"], data=b"fresh")).status == 201
    assert await stored(guarded, "dir/new clip.mp4", **WRITER) == b"fresh"
    await assert_error(await guarded.get(answer["url"]), 403, "forbidden")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"not json", "invalid_json"),
        (b"[]", "invalid_json"),
        (b"{}", "invalid_key"),
        (b'{"key": 5}', "invalid_key"),
        (b'{"key": "../etc/passwd"}', "invalid_key"),
        (b'{"key": "a", "method": "PATCH"}', "invalid_method"),
        (b'{"key": "a", "ttl": 0}', "invalid_ttl"),
        (b'{"key": "a", "ttl": -5}', "invalid_ttl"),
        (b'{"key": "a", "ttl": "60"}', "invalid_ttl"),
        (b'{"key": "a", "ttl": true}', "invalid_ttl"),
        (b'{"key": "a", "ttl": 1.5}', "invalid_ttl"),
        (b'{"key": "a", "ttl": 99999999999}', "invalid_ttl"),
    ],
)
async def test_sign_rejects_bad_requests_with_400(guarded: Client, body: bytes, code: str) -> None:
    await assert_error(await guarded.post("/sign", data=body, headers=WRITER), 400, code)


async def test_sign_without_a_signing_key_is_400(
    make_config: Callable[..., Config], start_vidproxy: Callable[..., Any]
) -> None:
    client = await start_vidproxy(make_config("fs", auth={"write_tokens": [WRITE_TOKEN]}))
    response = await client.post("/sign", data=json.dumps({"key": KEY}), headers=WRITER)
    await assert_error(response, 400, "signing_disabled")


async def test_sign_cannot_mint_read_urls_past_the_read_tokens(
    make_config: Callable[..., Config], start_vidproxy: Callable[..., Any]
) -> None:
    # Writes open, reads guarded: POST /sign is a write, but a GET URL it signs must
    # not let an anonymous caller read what the read tokens protect.
    auth = {"read_tokens": [READ_TOKEN], "signing_key": SIGNING_KEY}
    client = await start_vidproxy(make_config("fs", auth=auth))
    await client.put(f"/videos/{KEY}", data=BODY)
    body = json.dumps({"key": KEY})
    await assert_error(await client.post("/sign", data=body), 401, "unauthorized")
    for method in ("GET", "HEAD"):
        anonymous = await client.post("/sign", data=json.dumps({"key": KEY, "method": method}))
        assert anonymous.status == 401
    answer = await sign_via_api(client, {"key": KEY}, headers=READER)
    assert (await client.get(answer["url"])).status == 200
    assert (await sign_via_api(client, {"key": KEY, "method": "PUT"}, headers={}))["url"]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_a_read_token_signs_reads(guarded: Client, method: str) -> None:
    # A viewer of the page with a read token gets links its <video> can play.
    answer = await sign_via_api(guarded, {"key": KEY, "method": method}, headers=READER)
    response = await guarded.request(method, answer["url"])
    assert response.status == 200
    assert await response.read() == (BODY if method == "GET" else b"")


@pytest.mark.parametrize("method", ["PUT", "DELETE"])
async def test_a_read_token_cannot_sign_writes(guarded: Client, method: str) -> None:
    body = json.dumps({"key": KEY, "method": method})
    response = await guarded.post("/sign", data=body, headers=READER)
    await assert_error(response, 403, "forbidden")
    assert (await response.json())["message"] == "a read token cannot write"


@pytest.mark.parametrize("method", ["GET", "PUT"])
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer nope"}])
async def test_sign_without_a_known_token_is_401_before_the_body_is_read(
    guarded: Client, method: str, headers: dict[str, str]
) -> None:
    for body in (json.dumps({"key": KEY, "method": method}), "not json"):
        response = await guarded.post("/sign", data=body, headers=headers)
        await assert_error(response, 401, "unauthorized")


# ---- `vidproxy sign` ---------------------------------------------------------------------


def test_cli_sign_prints_the_documented_signature(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./config.toml
    monkeypatch.setenv("VIDPROXY_AUTH_SIGNING_KEY", SIGNING_KEY)
    before = int(time.time())
    assert cli_main(["sign", "--method", "PUT", "dir/a b.mp4", "--ttl", "3600"]) == 0
    url = capsys.readouterr().out.strip()
    parts = urlsplit(url)
    assert parts.path == "/videos/dir/a%20b.mp4"
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    expires = int(query["expires"])
    assert before + 3600 <= expires <= int(time.time()) + 3600
    assert query["sig"] == signature("PUT", "dir/a b.mp4", expires)


def test_cli_sign_prefixes_the_base_url(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    key_file = tmp_path / "signing.key"
    key_file.write_text(SIGNING_KEY + "\n")
    monkeypatch.setenv("VIDPROXY_AUTH_SIGNING_KEY_FILE", str(key_file))
    assert cli_main(["sign", KEY, "--url", "https://videos.example/"]) == 0
    url = capsys.readouterr().out.strip()
    assert url.startswith(f"https://videos.example/videos/{KEY}?expires=")
    expires = int(parse_qs(urlsplit(url).query)["expires"][0])
    assert url.endswith(f"sig={signature('GET', KEY, expires)}")


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["sign", KEY], {}),  # no signing key
        (["sign", "../x"], {"VIDPROXY_AUTH_SIGNING_KEY": SIGNING_KEY}),
    ],
)
def test_cli_sign_refuses_with_exit_2(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    env: dict[str, str],
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VIDPROXY_AUTH_SIGNING_KEY", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli_main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("vidproxy: ")
    assert SIGNING_KEY not in captured.err


async def test_vidproxy_sign_command_prints_a_url_the_server_accepts(
    guarded: Client, tmp_path: Path
) -> None:
    env = {"VIDPROXY_AUTH_SIGNING_KEY": SIGNING_KEY, "PATH": "/usr/bin:/bin"}
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "vidproxy", "sign", KEY, "--ttl", "60"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    response = await guarded.get(result.stdout.strip())
    assert (response.status, await response.read()) == (200, BODY)


# ---- secrets from env and files ------------------------------------------------------------


async def test_tokens_and_key_from_env_and_files_are_honoured(
    tmp_path: Path, start_vidproxy: Callable[..., Any]
) -> None:
    read_file = tmp_path / "read.tokens"
    read_file.write_text(f"\n  {READ_TOKEN}  \nsecond-reader\n\n")
    key_file = tmp_path / "signing.key"
    key_file.write_text(SIGNING_KEY + "\n")
    env = {
        "VIDPROXY_AUTH_WRITE_TOKENS": f" {WRITE_TOKEN} , other-writer ",
        "VIDPROXY_AUTH_READ_TOKENS_FILE": str(read_file),
        "VIDPROXY_AUTH_SIGNING_KEY_FILE": str(key_file),
    }
    config = load_config(None, env=env, overrides={"fs": {"dir": str(tmp_path / "data")}})
    assert config.auth.write_tokens == (WRITE_TOKEN, "other-writer")
    assert config.auth.read_tokens == (READ_TOKEN, "second-reader")
    assert config.auth.signing_key == SIGNING_KEY
    client = await start_vidproxy(config)
    writer = {"Authorization": "Bearer other-writer"}
    assert (await client.put(f"/videos/{KEY}", data=BODY, headers=writer)).status == 201
    reader = {"Authorization": "Bearer second-reader"}
    assert (await client.get(f"/videos/{KEY}", headers=reader)).status == 200
    assert (await client.get(signed(KEY))).status == 200


def test_an_unreadable_secret_file_is_a_config_error(tmp_path: Path) -> None:
    env = {"VIDPROXY_AUTH_WRITE_TOKENS_FILE": str(tmp_path / "missing")}
    with pytest.raises(ConfigError, match=r"^auth\.write_tokens_file: cannot read "):
        load_config(None, env=env)


def test_a_secret_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    secret = tmp_path / "write.tokens"
    secret.write_bytes(b"\xfftoken\n")
    env = {"VIDPROXY_AUTH_WRITE_TOKENS_FILE": str(secret)}
    with pytest.raises(ConfigError) as refused:
        load_config(None, env=env)
    assert str(refused.value) == f"auth.write_tokens_file: {secret} is not UTF-8 text (byte 0)"


def test_config_repr_never_shows_secrets() -> None:
    env = {
        "VIDPROXY_AUTH_WRITE_TOKENS": WRITE_TOKEN,
        "VIDPROXY_AUTH_READ_TOKENS": READ_TOKEN,
        "VIDPROXY_AUTH_SIGNING_KEY": SIGNING_KEY,
    }
    config = load_config(None, env=env)
    for text in (repr(config), str(config), repr(config.auth), f"{config!r}"):
        for secret in (WRITE_TOKEN, READ_TOKEN, SIGNING_KEY):
            assert secret not in text


async def test_no_token_key_or_signature_reaches_the_log(tmp_path: Path) -> None:
    near_miss = WRITE_TOKEN[:-1] + "X"
    env = {
        "VIDPROXY_FS_DIR": str(tmp_path / "data"),
        "VIDPROXY_AUTH_WRITE_TOKENS": WRITE_TOKEN,
        "VIDPROXY_AUTH_READ_TOKENS": READ_TOKEN,
        "VIDPROXY_AUTH_SIGNING_KEY": SIGNING_KEY,
        "VIDPROXY_SERVER_LOG_LEVEL": "debug",
    }
    sigs: list[str] = []
    process = VidproxyProcess(tmp_path, env)
    async with running(process), aiohttp.ClientSession(process.url) as http:
        assert (await http.put(f"/videos/{KEY}", data=BODY, headers=WRITER)).status == 201
        assert (await http.get(f"/videos/{KEY}", headers=READER)).status == 200
        near = {"Authorization": f"Bearer {near_miss}"}
        assert (await http.get(f"/videos/{KEY}", headers=near)).status == 401
        for method in ("GET", "PUT"):
            response = await http.post("/sign", json={"key": KEY, "method": method}, headers=WRITER)
            url = (await response.json())["url"]
            sigs.append(parse_qs(urlsplit(url).query)["sig"][0])
            if method == "GET":
                assert (await http.get(url)).status == 200
                assert (await http.head(url)).status == 200
            else:
                assert (await http.put(url, data=BODY)).status == 201
        for case in ("flipped sig", "expired", "other signing key"):
            tampered = TAMPERED[case]()
            sigs.append(parse_qs(urlsplit(tampered).query)["sig"][0])
            assert (await http.get(tampered)).status == 403
        leaky_query = f"/videos?limit=5&token={WRITE_TOKEN}&sig={sigs[0]}"
        assert (await http.get(leaky_query, headers=READER)).status == 200
        # Requests aiohttp's own parser refuses, with the secrets in the bad line.
        for raw in (
            f"GET /videos/{KEY} HTTP/1.1\r\nAuthorization: Bearer {WRITE_TOKEN}\x01\r\n\r\n",
            f"GET /videos/{KEY}?sig={sigs[1]}\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
            f"GET /videos/{KEY} HTTP/1.1\r\nAuthori zation: Bearer {READ_TOKEN}\r\n\r\n",
        ):
            assert await _raw_status(process.port, raw.encode("latin-1")) == 400
    log = process.log()
    assert log.count('"GET /videos/clip.mp4?expires=') >= 4, log  # requests were logged
    assert "sig=REDACTED" in log
    for secret in [WRITE_TOKEN, READ_TOKEN, SIGNING_KEY, near_miss, *sigs]:
        assert secret not in log, f"{secret!r} is in the log"


@pytest.mark.parametrize(
    ("target", "logged"),
    [
        (
            "/videos?prefix=%0A2026-01-01%20ERROR%20forged",
            "/videos?prefix=%0A2026-01-01%20ERROR%20forged",
        ),
        ("/videos/a?expires=1&sig=abc&x=%0D%0A", "/videos/a?expires=1&sig=REDACTED&x=REDACTED"),
        ("/videos?limit=5&token=t&%73ig=s", "/videos?limit=5&token=REDACTED&%73ig=REDACTED"),
        ("/videos/a%0Ab?", "/videos/a%0Ab"),
    ],
)
def test_the_access_log_keeps_query_values_encoded_and_secrets_out(
    target: str, logged: str
) -> None:
    request = make_mocked_request("GET", target)
    fields = access_fields(request, web.Response(), 0.0)
    assert fields["path"] == logged


async def _raw_status(port: int, request: bytes) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(ANSWER_WITHIN):
            status_line = await reader.readline()
        return int(status_line.split()[1])
    finally:
        writer.close()


# ---- the start-up warning ------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "videos.example"])
def test_start_up_warns_when_exposed_without_write_tokens(
    host: str, caplog: pytest.LogCaptureFixture
) -> None:
    config = load_config(None, env={}, overrides={"server": {"host": host}})
    with caplog.at_level(logging.WARNING, logger="vidproxy"):
        warn_if_exposed(config)
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert host in record.getMessage() and "write_tokens" in record.getMessage()


@pytest.mark.parametrize(
    ("host", "auth"),
    [
        ("127.0.0.1", {}),
        ("127.0.0.2", {}),
        ("::1", {}),
        ("localhost", {}),
        ("0.0.0.0", {"write_tokens": [WRITE_TOKEN]}),
    ],
)
def test_no_start_up_warning_on_loopback_or_with_write_tokens(
    host: str, auth: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    config = load_config(None, env={}, overrides={"server": {"host": host}, "auth": auth})
    with caplog.at_level(logging.WARNING, logger="vidproxy"):
        warn_if_exposed(config)
    assert caplog.records == []


async def test_the_served_process_warns_loudly_before_it_binds(tmp_path: Path) -> None:
    # 192.0.2.1 (TEST-NET-1) is never a local address: the process logs its warning
    # and then fails to bind, so nothing is ever exposed beyond loopback here.
    env = {"VIDPROXY_FS_DIR": str(tmp_path / "data"), "VIDPROXY_SERVER_HOST": "192.0.2.1"}
    process = VidproxyProcess(tmp_path, env)
    process.launch()
    try:
        assert await process.await_exit(30) != 0
    finally:
        process.kill()
    log = process.log()
    warning = next(line for line in log.splitlines() if "write_tokens" in line)
    assert " WARNING " in warning and "!!!" in warning and "192.0.2.1" in warning
