"""vidproxy/web/openapi.json: a valid OpenAPI 3.1 document, served at /openapi.json,
that names exactly the routes ``create_app`` registers, and whose every
documented status a running vidproxy really answers: on fs, on S3 (moto), on an
S3 endpoint nobody listens on, and on one that denies every request."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from aiohttp import web
from cache_rig import wait_for
from conftest import Connect
from hypothesis import given
from hypothesis import strategies as st
from openapi_probe import (
    Client,
    Document,
    Probe,
    expand,
    is_public,
    load_document,
    operations,
)
from openapi_spec_validator import validate

from vidproxy.config import Config
from vidproxy.errors import InvalidKey
from vidproxy.keys import MAX_KEY_BYTES, validate_key
from vidproxy.web.app import create_app

Start = Callable[[Config], Any]
Wait = Callable[..., Awaitable[None]]

KEY = "demo/clip.mp4"  # keys may contain "/": the document says so, the tests use one
MISSING_KEY = "demo/missing.mp4"
BAD_KEY = "demo\\clip.mp4"  # a backslash: 400 invalid_key
BODY = bytes(range(256)) * 4
WRITE_TOKEN = "openapi-write-token"
READ_TOKEN = "openapi-read-token"
AUTH = {"write_tokens": [WRITE_TOKEN], "read_tokens": [READ_TOKEN], "signing_key": "openapi-key"}
WRITER = {"Authorization": f"Bearer {WRITE_TOKEN}"}
TUS = {"Tus-Resumable": "1.0.0"}
READER = {"Authorization": f"Bearer {READ_TOKEN}"}
NEW_UPLOADS = ("/videos", "/upload")  # POST: a new ULID key
KEYED_UPLOADS = (("PUT", "/videos/{key}"), ("POST", "/upload/{key}"))
UPLOADS = [("POST", t) for t in NEW_UPLOADS] + list(KEYED_UPLOADS)
READS = [(m, t) for t in ("/videos/{key}", "/download/{key}") for m in ("GET", "HEAD")]
NO_AUTO_TYPE = {"Content-Type"}
# S3's answer to a request it refuses (wrong credentials, a bucket policy).
ACCESS_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>"
)


@pytest.fixture(scope="module")
def doc() -> Document:
    return load_document()


def test_document_is_valid_openapi_3_1(doc: Document) -> None:
    assert doc["openapi"].startswith("3.1.")
    validate(doc)


# ---- the document and the router ------------------------------------------


def _canonical(path: str) -> str:
    # "/videos/{key:[\s\S]*}" and "/videos/{key}" name the same template.
    return re.sub(r"\{(\w+):[^}]*\}", r"{\1}", path)


def routed_operations(app: web.Application) -> set[tuple[str, str]]:
    return {
        (_canonical(resource.canonical), route.method)
        for resource in app.router.resources()
        for route in resource
    }


def test_routes_and_documented_operations_are_the_same(
    doc: Document, make_config: Callable[..., Config]
) -> None:
    routed = routed_operations(create_app(make_config("fs")))
    documented = {(template, method) for template, method, _ in operations(doc)}
    # aiohttp answers HEAD on every GET route; the document says so once, in
    # info.description, and lists HEAD only where it matters (the downloads).
    implied_head = {(template, "HEAD") for template, method in documented if method == "GET"}
    assert documented - routed == set(), "documented but not routed"
    assert routed - documented - implied_head == set(), "routed but not documented"


def test_keys_with_slashes_are_documented(doc: Document) -> None:
    key = doc["components"]["parameters"]["Key"]
    assert "slashes included" in key["description"] and "%2F" in key["description"]
    assert {"/videos/{key}", "/upload/{key}", "/download/{key}"} <= set(doc["paths"])


async def test_a_slash_in_a_key_may_be_sent_encoded(
    make_config: Callable[..., Config], start_vidproxy: Start
) -> None:
    client = await start_vidproxy(make_config("fs"))
    assert (await client.put(f"/videos/{KEY}", data=BODY)).status == 201
    response = await client.get("/videos/" + KEY.replace("/", "%2F"))
    assert response.status == 200
    assert await response.read() == BODY


KEY_TEXT = st.text(alphabet=st.sampled_from("ab./\\\n\x7f\u00e9 "), max_size=12) | st.text(
    alphabet=st.characters(exclude_categories=["Cs"]), max_size=30
)


KEY_PATTERN = re.compile(load_document()["components"]["schemas"]["Key"]["pattern"])


@given(key=KEY_TEXT)
def test_the_key_pattern_accepts_exactly_the_valid_keys(key: str) -> None:
    try:
        validate_key(key)
        valid = True
    except InvalidKey:
        valid = False
    # The pattern cannot count UTF-8 bytes: the 1024-byte bound is in the description.
    assert valid == (KEY_PATTERN.search(key) is not None and len(key.encode()) <= MAX_KEY_BYTES)


async def test_the_served_document_is_the_packaged_one_and_public(
    doc: Document, make_config: Callable[..., Config], start_vidproxy: Start
) -> None:
    client = await start_vidproxy(make_config("fs", auth=AUTH))
    response = await client.get("/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.json() == doc


async def test_methods_a_path_does_not_document_get_405_with_allow(
    doc: Document, make_config: Callable[..., Config], start_vidproxy: Start
) -> None:
    client = await start_vidproxy(make_config("fs"))
    probe = Probe(doc)
    problems = []
    for template, item in doc["paths"].items():
        methods = {m.upper() for m in item}
        methods |= {"HEAD"} if "GET" in methods else set()
        path = expand(template, KEY)
        method = "PUT" if "PATCH" in methods else "PATCH"  # one the path does not take
        async with client.request(method, path) as response:
            answer = await response.json()
        allow = {m.strip() for m in response.headers.get("Allow", "").split(",")}
        if response.status != 405 or allow != methods or answer["error"] != "method_not_allowed":
            problems.append(f"{method} {template}: {response.status} Allow={allow} {answer}")
        refusal = doc["components"]["responses"]["MethodNotAllowed"]
        errors = probe.schema_errors(refusal["content"]["application/json"]["schema"], answer)
        problems += [f"PATCH {template}: {e.message}" for e in errors]
    assert problems == []


# ---- every documented status, reached -------------------------------------


async def test_every_documented_status_is_answered_as_documented(
    doc: Document,
    make_config: Callable[..., Config],
    start_vidproxy: Start,
    raw_connect: Connect,
    aiohttp_server: Callable[..., Any],
    wait_until: Wait,
    tmp_path: Path,
) -> None:
    """Each answer matches its documentation (status, headers, body schema, error
    code), and every documented (path, method, status) was answered at least once."""
    probe = Probe(doc)
    servers = itertools.count()

    async def start(backend: str, **sections: Any) -> Client:
        # Each server its own directories: the S3 cache index outlives its server.
        place = tmp_path / f"server-{next(servers)}"
        dirs = {"fs": {"dir": str(place / "data")}, "cache": {"dir": str(place / "cache")}}
        client: Client = await start_vidproxy(make_config(backend, **dirs, **sections))
        return client

    fs = await start("fs")
    await tus_answers(probe, fs, raw_connect, tmp_path / "server-0" / "data")
    await service_answers(probe, fs)
    await upload_answers(probe, fs, raw_connect)
    await read_answers(probe, fs, "fs")
    await list_and_delete_answers(probe, fs)
    limited = await start("fs", server={"max_upload_bytes": 100, "body_timeout": 0.3})
    await limit_answers(probe, limited, raw_connect)
    one_slot = await start("fs", server={"max_concurrent_uploads": 1})
    await busy_answers(probe, one_slot, raw_connect, wait_until)
    await auth_answers(probe, await start("fs", auth=AUTH))
    await read_answers(probe, await start("s3"), "s3")
    unreachable = await start("s3", s3={"endpoint_url": "http://127.0.0.1:1"})
    await store_failure_answers(probe, unreachable, "503")
    denying = await aiohttp_server(_access_denied_s3())
    refused = await start("s3", s3={"endpoint_url": str(denying.make_url(""))})
    await store_failure_answers(probe, refused, "502")
    silent = await aiohttp_server(_silent_s3())
    deadline = {"endpoint_url": str(silent.make_url("")), "request_deadline": 0.3}
    stalled = await start("s3", s3=deadline)
    await store_failure_answers(probe, stalled, "504")
    assert probe.problems == [], "\n".join(probe.problems)
    assert probe.unreached() == [], "\n".join(probe.unreached())


async def service_answers(probe: Probe, client: Client) -> None:
    page = await probe.send(client, "GET", "/", expect=200)
    await probe.send(
        client, "GET", "/", headers={"If-None-Match": page.headers["ETag"]}, expect=304
    )
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/favicon.ico"):
        await probe.send(client, "GET", path, expect=200)
    await probe.send(
        client, "POST", "/sign", json={"key": KEY}, expect=400, code="signing_disabled"
    )
    await probe.send(client, "POST", "/sign", data=b"[", expect=400, code="invalid_json")


async def upload_answers(probe: Probe, client: Client, connect: Connect) -> None:
    for template in NEW_UPLOADS:
        created = await probe.send(client, "POST", template, data=BODY, expect=201)
        assert created.headers["Location"] == "/videos/" + created.json()["key"]
        wrong = {"X-Content-SHA256": "0" * 64}
        await probe.send(
            client, "POST", template, data=BODY, headers=wrong, expect=400, code="checksum_mismatch"
        )
    for method, template in KEYED_UPLOADS:
        await probe.send(client, method, template, KEY, data=BODY, expect=201)
        create_only = {"If-None-Match": "*"}
        await probe.send(client, method, template, KEY, data=BODY, headers=create_only, expect=412)
        await probe.send(
            client, method, template, BAD_KEY, data=BODY, expect=400, code="invalid_key"
        )
    for method, template in UPLOADS:
        await probe.send_raw(
            connect, client, method, template, KEY, headers={}, expect=411, code="length_required"
        )
        odd = {"Expect": "something-else", "Content-Length": str(len(BODY))}
        await probe.send_raw(
            connect,
            client,
            method,
            template,
            KEY,
            headers=odd,
            expect=417,
            code="expectation_failed",
        )


async def read_answers(probe: Probe, client: Client, backend: str) -> None:
    await client.put(f"/videos/{KEY}", data=BODY)
    for method, template in READS:
        full = await probe.send(client, method, template, KEY, expect=200)
        assert full.headers["Content-Length"] == str(len(BODY))
        assert ("X-Cache" in full.headers) == (backend == "s3")
        part = await probe.send(
            client, method, template, KEY, headers={"Range": "bytes=0-9"}, expect=206
        )
        assert part.headers["Content-Range"] == f"bytes 0-9/{len(BODY)}"
        etag = {"If-None-Match": full.headers["ETag"]}
        await probe.send(client, method, template, KEY, headers=etag, expect=304)
        stale = {"If-Match": '"not-the-etag"'}
        await probe.send(
            client, method, template, KEY, headers=stale, expect=412, code="precondition_failed"
        )
        past_end = {"Range": f"bytes={len(BODY)}-"}
        await probe.send(
            client,
            method,
            template,
            KEY,
            headers=past_end,
            expect=416,
            code="range_not_satisfiable",
        )
        await probe.send(client, method, template, MISSING_KEY, expect=404, code="not_found")
        await probe.send(client, method, template, BAD_KEY, expect=400, code="invalid_key")


async def list_and_delete_answers(probe: Probe, client: Client) -> None:
    page = await probe.send(client, "GET", "/videos", params={"prefix": "demo/"}, expect=200)
    assert [item["key"] for item in page.json()["items"]] == [KEY]
    await probe.send(
        client, "GET", "/videos", params={"limit": "0"}, expect=400, code="invalid_query"
    )
    await probe.send(client, "DELETE", "/videos/{key}", KEY, expect=204)
    await probe.send(client, "DELETE", "/videos/{key}", BAD_KEY, expect=400, code="invalid_key")


async def limit_answers(probe: Probe, client: Client, connect: Connect) -> None:
    """``server.max_upload_bytes`` is 100 and ``server.body_timeout`` 0.3 s here."""
    for method, template in UPLOADS:
        await probe.send(client, method, template, KEY, data=BODY, expect=413, code="too_large")
        stalled = {"Content-Length": "50"}
        await probe.send_raw(
            connect,
            client,
            method,
            template,
            KEY,
            headers=stalled,
            body=b"x" * 10,
            expect=408,
            code="request_timeout",
        )


async def busy_answers(probe: Probe, client: Client, connect: Connect, wait_until: Wait) -> None:
    """One upload slot: while one body is on its way, other uploads get 503."""
    holder = await connect(client)
    await holder.send_head("PUT", "/videos/held.mp4", {"Content-Length": "1000"})
    await holder.send(b"x")
    await wait_until(lambda: _upload_in_flight(client), "the first upload holds the slot")
    for method, template in UPLOADS:
        await probe.send(
            client, method, template, KEY, data=BODY, expect=503, code="too_many_uploads"
        )
    await holder.close()


async def _upload_in_flight(client: Client) -> bool:
    text = await (await client.get("/metrics")).text()
    return "vidproxy_uploads_in_flight 1.0" in text


async def auth_answers(probe: Probe, client: Client) -> None:
    """Tokens configured: no token or an unknown one gives 401 and a read token
    writing 403, on every operation the document does not mark public; the
    public ones answer without a token."""
    for template, method, operation in operations(probe.doc):
        if is_public(probe.doc, operation):
            async with client.request(method, template) as response:
                assert response.status not in (401, 403), f"{method} {template} is public"
            continue
        body: dict[str, Any] = {}
        if template == "/sign":  # a read token signs reads, not writes
            body = {"json": {"key": KEY, "method": "PUT"}}
        elif "requestBody" in operation:
            body = {"data": BODY}
        await probe.send(client, method, template, KEY, expect=401, code="unauthorized", **body)
        wrong = {"Authorization": "Bearer not-a-token"}
        await probe.send(
            client, method, template, KEY, headers=wrong, expect=401, code="unauthorized", **body
        )
        if method not in ("GET", "HEAD", "OPTIONS"):  # a known token without the right
            await probe.send(
                client, method, template, KEY, headers=READER, expect=403, code="forbidden", **body
            )
    # A signed URL from /sign stands in for the token, and one that is wrong does not.
    await client.put(f"/videos/{KEY}", data=BODY, headers=WRITER)
    signed = await probe.send(
        client, "POST", "/sign", json={"key": KEY}, headers=WRITER, expect=200
    )
    query = dict(parse_qsl(urlsplit(signed.json()["url"]).query))
    await probe.send(client, "GET", "/videos/{key}", KEY, params=query, expect=200)
    await probe.send(client, "GET", "/download/{key}", KEY, params=query, expect=200)
    await signed_tus_answers(probe, client)
    forged = {**query, "sig": "0" * 64}
    for method in ("GET", "HEAD"):
        for template in ("/videos/{key}", "/download/{key}"):
            code = None if method == "HEAD" else "forbidden"
            await probe.send(client, method, template, KEY, params=forged, expect=403, code=code)


def _tus_request(template: str, method: str) -> dict[str, str]:
    """Headers that get a tus request past its checks, to the store."""
    headers = dict(TUS)
    if template == "/uploads":
        headers["Upload-Length"] = "10"
    elif method == "PATCH":
        headers.update({"Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"})
    elif method == "POST":
        headers["X-HTTP-Method-Override"] = "DELETE"
    return headers


async def tus_answers(probe: Probe, client: Client, connect: Connect, data_dir: Path) -> None:
    """tus at /uploads on fs: every status the document lists for it."""
    for template in ("/uploads", "/uploads/{upload_id}"):
        await probe.send(client, "OPTIONS", template, expect=204)
    start = {**TUS, "Upload-Length": str(len(BODY))}
    created = await probe.send(client, "POST", "/uploads", headers=start, expect=201)
    upload_id = created.headers["Location"].rsplit("/", 1)[1]
    item = "/uploads/{upload_id}"
    octets = {**TUS, "Content-Type": "application/offset+octet-stream"}
    at = lambda n: {**octets, "Upload-Offset": str(n)}  # noqa: E731
    await probe.send(client, "PATCH", item, upload_id, data=BODY[:10], headers=at(0), expect=204)
    await probe.send(client, "HEAD", item, upload_id, headers=TUS, expect=200)
    await probe.send(
        client,
        "PATCH",
        item,
        upload_id,
        data=b"x",
        headers=at(0),
        expect=409,
        code="offset_mismatch",
    )
    wrong = {**at(10), "Upload-Checksum": "sha1 " + "A" * 27 + "="}
    await probe.send(
        client,
        "PATCH",
        item,
        upload_id,
        data=b"x",
        headers=wrong,
        expect=460,
        code="upload_checksum_mismatch",
    )
    await probe.send(
        client,
        "PATCH",
        item,
        upload_id,
        data=b"x",
        headers={**TUS, "Upload-Offset": "10"},
        expect=415,
        code="unsupported_media_type",
    )
    await probe.send(
        client,
        "PATCH",
        item,
        upload_id,
        data=b"x",
        headers={**octets, "Upload-Offset": "x"},
        expect=400,
        code="invalid_upload_header",
    )
    await probe.send(
        client, "PATCH", item, upload_id, data=BODY, headers=at(10), expect=413, code="too_large"
    )
    for method in ("HEAD", "PATCH", "DELETE", "POST"):
        await probe.send(
            client, method, item, upload_id, expect=412, code="tus_version_unsupported"
        )
    override = {**at(10), "X-HTTP-Method-Override": "PATCH"}
    await probe.send(
        client, "POST", item, upload_id, data=BODY[10:20], headers=override, expect=204
    )
    await probe.send(
        client,
        "POST",
        item,
        upload_id,
        headers={**TUS, "X-HTTP-Method-Override": "HEAD"},
        expect=200,
    )
    await probe.send(
        client, "POST", item, upload_id, headers=TUS, expect=405, code="method_not_allowed"
    )
    # One PATCH holds the upload; a second one meanwhile gets 423.
    holder = await connect(client)
    await holder.send_head("PATCH", f"/uploads/{upload_id}", {**at(20), "Content-Length": "100"})
    await holder.send(b"y")

    async def locked() -> bool:
        async with client.patch(f"/uploads/{upload_id}", data=b"z", headers=at(20)) as response:
            return response.status == 423

    await wait_for(locked, "423 while another PATCH runs")
    await probe.send(
        client,
        "PATCH",
        item,
        upload_id,
        data=b"z",
        headers=at(20),
        expect=423,
        code="upload_locked",
    )
    await probe.send(
        client, "DELETE", item, upload_id, headers=TUS, expect=423, code="upload_locked"
    )
    await holder.close()
    await wait_for(lambda: _unlocked(client, upload_id), "the held PATCH to end")
    await probe.send(client, "DELETE", item, upload_id, headers=TUS, expect=204)
    for method in ("HEAD", "PATCH", "DELETE"):
        headers = at(0) if method == "PATCH" else TUS
        await probe.send(
            client, method, item, upload_id, headers=headers, expect=404, code="not_found"
        )
    await probe.send(
        client,
        "POST",
        item,
        upload_id,
        headers={**TUS, "X-HTTP-Method-Override": "DELETE"},
        expect=404,
        code="not_found",
    )
    await tus_creation_refusals(probe, client)
    await tus_expired_answers(probe, client, data_dir)


async def _unlocked(client: Client, upload_id: str) -> bool:
    async with client.head(f"/uploads/{upload_id}", headers=TUS) as response:
        offset = response.headers.get("Upload-Offset")
    async with client.patch(
        f"/uploads/{upload_id}",
        data=b"",
        headers={
            **TUS,
            "Upload-Offset": offset or "0",
            "Content-Type": "application/offset+octet-stream",
        },
    ) as response:
        return response.status != 423


async def tus_creation_refusals(probe: Probe, client: Client) -> None:
    await probe.send(
        client, "POST", "/uploads", headers=TUS, expect=400, code="invalid_upload_header"
    )
    await probe.send(
        client,
        "POST",
        "/uploads",
        headers={"Upload-Length": "1"},
        expect=412,
        code="tus_version_unsupported",
    )
    await client.put(f"/videos/{KEY}", data=BODY)
    taken = base64.b64encode(KEY.encode()).decode()
    only = {**TUS, "Upload-Length": "1", "Upload-Metadata": f"key {taken},create_only"}
    await probe.send(
        client, "POST", "/uploads", headers=only, expect=412, code="precondition_failed"
    )
    huge = {**TUS, "Upload-Length": str(10**15)}
    await probe.send(client, "POST", "/uploads", headers=huge, expect=413, code="too_large")
    typed = {**TUS, "Upload-Length": "3", "Content-Type": "text/plain"}
    await probe.send(
        client,
        "POST",
        "/uploads",
        data=b"abc",
        headers=typed,
        expect=415,
        code="unsupported_media_type",
    )


async def tus_expired_answers(probe: Probe, client: Client, data_dir: Path) -> None:
    created = await client.post("/uploads", headers={**TUS, "Upload-Length": "10"})
    upload_id = created.headers["Location"].rsplit("/", 1)[1]
    info = data_dir / "uploads" / f"{upload_id}.info"
    record = json.loads(info.read_text())
    record["expires"] = 1.0  # long past, as time would make it
    info.write_text(json.dumps(record))
    item = "/uploads/{upload_id}"
    await probe.send(client, "HEAD", item, upload_id, headers=TUS, expect=410)
    at = {**TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
    await probe.send(
        client, "PATCH", item, upload_id, data=b"a", headers=at, expect=410, code="upload_expired"
    )


async def signed_tus_answers(probe: Probe, client: Client) -> None:
    """A signed tus creation URL from /sign, and the upload's own signed Location."""
    grant = {"key": "tus/signed.bin", "method": "POST"}
    signed = await probe.send(client, "POST", "/sign", json=grant, headers=WRITER, expect=200)
    query = dict(parse_qsl(urlsplit(signed.json()["url"]).query))
    start = {**TUS, "Upload-Length": "3"}
    created = await probe.send(client, "POST", "/uploads", params=query, headers=start, expect=201)
    location = urlsplit(created.headers["Location"])
    upload_id, own = location.path.rsplit("/", 1)[1], dict(parse_qsl(location.query))
    at = {**TUS, "Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"}
    item = "/uploads/{upload_id}"
    await probe.send(client, "PATCH", item, upload_id, params=own, headers=at, data=b"abc",
                     expect=204)  # fmt: skip
    forged = {**own, "sig": "0" * 64}
    await probe.send(client, "HEAD", item, upload_id, params=forged, headers=TUS, expect=403)


async def store_failure_answers(probe: Probe, client: Client, status: str) -> None:
    """Every operation documenting ``status`` (502, 503 or 504) gets it when S3 fails."""
    for template, method, operation in operations(probe.doc):
        if status not in operation["responses"]:
            continue
        # The probe also checks the headers the document requires (Retry-After on 503).
        kwargs: dict[str, Any] = {"data": BODY} if "requestBody" in operation else {}
        if template.startswith("/uploads"):
            kwargs = {"headers": _tus_request(template, method)}
        await probe.send(client, method, template, KEY, expect=int(status), **kwargs)
    # /readyz turns whatever S3 says into 503: not ready.
    await probe.send(client, "GET", "/readyz", expect=503, code="upstream_unavailable")


def _silent_s3() -> web.Application:
    """An S3 endpoint that reads each request and never answers it (until shutdown)."""

    async def hang(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.Event().wait()
        return web.Response(status=500)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hang)
    return app


def _access_denied_s3() -> web.Application:
    async def deny(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=403, body=ACCESS_DENIED, content_type="application/xml")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", deny)
    return app
