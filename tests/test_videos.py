"""handlers/videos.py and health.py: the HTTP table, over real sockets, on fs and on S3."""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
from collections.abc import Callable
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient
from conftest import PART_SIZE, Connect, free_port
from rigs.objects import put_untyped as put

from vidproxy.config import Config
from vidproxy.keys import MAX_KEY_BYTES

ULID_RE = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")
NO_AUTO_TYPE = {"Content-Type"}  # aiohttp's client would send application/octet-stream
MP4_HEAD = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41"
WEBM_HEAD = b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\x82\x84webm"
TS_HEAD = (b"\x47\x40\x00\x10" + b"\xff" * 184) * 3
OGG_HEAD = b"OggS\x00\x02" + b"\x00" * 22 + b"\x80theora" + b"\x00" * 20

Client = TestClient[Any, Any]


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def path_of(key: str) -> str:
    return "/videos/" + quote(key, safe="/")


async def get_bytes(client: Client, key: str) -> bytes:
    response = await client.get(path_of(key))
    assert response.status == 200, await response.text()
    return await response.read()


async def assert_error(response: Any, status: int, code: str) -> None:
    assert response.status == status
    assert response.content_type == "application/json"
    body = await response.json()
    assert body["error"] == code
    assert isinstance(body["message"], str) and body["message"]


@pytest.fixture
async def fs_client(make_config: Callable[..., Config], start_vidproxy: Callable[..., Any]) -> Any:
    """vidproxy on fs only, for what the handlers decide before any store is asked
    (routing, key and query checks, content-type choice, aliases): S3 would add
    nothing but its start-up time."""
    return await start_vidproxy(make_config("fs"))


# ---- uploads ---------------------------------------------------------------------


async def test_post_stores_under_a_new_ulid_key(client: Client) -> None:
    body = payload(1000)
    response = await client.post("/videos", data=body, skip_auto_headers=NO_AUTO_TYPE)
    assert response.status == 201
    key = (await response.json())["key"]
    assert ULID_RE.fullmatch(key)
    assert await get_bytes(client, key) == body


async def test_post_answers_location_of_the_new_key(fs_client: Client) -> None:
    response = await fs_client.post("/videos", data=b"x", skip_auto_headers=NO_AUTO_TYPE)
    assert response.headers["Location"] == f"/videos/{(await response.json())['key']}"


async def test_two_posts_get_two_keys(fs_client: Client) -> None:
    first = await fs_client.post("/videos", data=b"one")
    second = await fs_client.post("/videos", data=b"two")
    assert (await first.json())["key"] != (await second.json())["key"]


async def test_put_answers_201_with_location_and_json(client: Client) -> None:
    body = payload(1234)
    response = await client.put("/videos/dir/clip.mp4", data=body, skip_auto_headers=NO_AUTO_TYPE)
    assert response.status == 201
    assert response.headers["Location"] == "/videos/dir/clip.mp4"
    answer = await response.json()
    assert set(answer) == {"key", "size", "etag", "content_type", "sha256"}
    assert answer["key"] == "dir/clip.mp4"
    assert answer["size"] == len(body)
    assert answer["sha256"] == hashlib.sha256(body).hexdigest()
    assert answer["content_type"] == "video/mp4"
    assert answer["etag"].startswith('"') and answer["etag"].endswith('"')


async def test_put_then_get_returns_the_same_bytes(client: Client) -> None:
    body = payload(100_000)
    await put(client, "clip.bin", body)
    assert await get_bytes(client, "clip.bin") == body


async def test_put_replaces_the_old_object(client: Client) -> None:
    await put(client, "clip", payload(5000, seed=1))
    new = payload(3000, seed=2)
    await put(client, "clip", new)
    assert await get_bytes(client, "clip") == new


async def test_put_answer_etag_is_the_get_etag(client: Client) -> None:
    answer = await put(client, "clip", b"hello")
    response = await client.get("/videos/clip")
    assert response.headers["ETag"] == answer["etag"]


async def test_multipart_put_answer_etag_is_the_get_etag(client: Client) -> None:
    answer = await put(client, "big", payload(PART_SIZE + 1))
    assert (await client.head("/videos/big")).headers["ETag"] == answer["etag"]


async def test_multipart_sized_put_round_trips(client: Client) -> None:
    body = payload(2 * PART_SIZE + 12345)
    answer = await put(client, "big.mp4", body)
    assert answer["size"] == len(body)
    assert await get_bytes(client, "big.mp4") == body


# ---- keys over HTTP ------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "vidéo/été ü.mp4",
        "a/b/c/d.webm",
        "with space+plus%percent",
        "query?and#fragment",
        "x" * MAX_KEY_BYTES,
    ],
)
async def test_unusual_but_valid_keys_round_trip(client: Client, key: str) -> None:
    body = payload(100)
    assert (await put(client, key, body))["key"] == key
    assert await get_bytes(client, key) == body


async def test_location_of_a_unicode_key_is_percent_encoded(client: Client) -> None:
    response = await client.put(path_of("vidéo/a b?.mp4"), data=b"x")
    assert response.headers["Location"] == "/videos/vid%C3%A9o/a%20b%3F.mp4"


async def test_a_key_and_a_key_below_it_coexist(client: Client) -> None:
    await put(client, "a", b"parent")
    await put(client, "a/b", b"child")
    assert (await get_bytes(client, "a"), await get_bytes(client, "a/b")) == (b"parent", b"child")


@pytest.mark.parametrize(
    "raw_path",
    [
        "/videos/a%0Ab",  # the router must not turn this into a 404
        "/videos/a%0D",
        "/videos/a%00b",
        "/videos/a%7F",
        "/videos/a%5Cb",
        "/videos/a//b",
        "/videos//a",
        "/videos/a/",
        "/videos/a/./b",
        "/videos/a/../b",
        "/videos/..",
        "/videos/%2E%2E/x",
        "/videos/" + "x" * (MAX_KEY_BYTES + 1),
        "/videos/" + "%C3%A9" * (MAX_KEY_BYTES // 2) + "x",
    ],
)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_invalid_keys_get_400_invalid_key(
    fs_client: Client, raw_connect: Connect, raw_path: str, method: str
) -> None:
    # Keys are checked before any store is asked, so one backend covers both.
    connection = await raw_connect(fs_client)
    await connection.send_head(method, raw_path, {"Content-Length": "1"})
    await connection.send(b"x")
    response = await connection.response()
    assert (response.status, response.json()["error"]) == (400, "invalid_key")


async def test_empty_key_is_400_invalid_key(fs_client: Client) -> None:
    response = await fs_client.put("/videos/", data=b"x")
    assert (response.status, (await response.json())["error"]) == (400, "invalid_key")


async def test_invalid_key_upload_stores_nothing(fs_client: Client, raw_connect: Connect) -> None:
    connection = await raw_connect(fs_client)
    await connection.send_head("PUT", "/videos/a/../b", {"Content-Length": "1"})
    await connection.send(b"x")
    assert (await connection.response()).status == 400
    listing = await (await fs_client.get("/videos")).json()
    assert listing["items"] == []


# ---- GET, HEAD, DELETE -------------------------------------------------------------


async def test_get_headers(client: Client) -> None:
    body = payload(4321)
    answer = await put(client, "clip.webm", body)
    response = await client.get("/videos/clip.webm")
    assert response.status == 200
    headers = response.headers
    assert headers["Content-Length"] == str(len(body))
    assert headers["Content-Type"] == "video/webm"
    assert headers["ETag"] == answer["etag"]
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["X-Content-SHA256"] == hashlib.sha256(body).hexdigest()
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert parsedate_to_datetime(headers["Last-Modified"]).tzinfo is not None


async def test_head_has_the_get_headers_and_no_body(client: Client) -> None:
    await put(client, "clip.webm", payload(4321))
    get = await client.get("/videos/clip.webm")
    head = await client.head("/videos/clip.webm")
    assert head.status == 200
    names = ("Content-Length", "Content-Type", "ETag", "Last-Modified", "Accept-Ranges")
    names += ("X-Content-SHA256", "X-Content-Type-Options")
    assert {n: head.headers.get(n) for n in names} == {n: get.headers.get(n) for n in names}
    assert await head.read() == b""


async def test_head_sends_no_body_bytes(client: Client, raw_connect: Connect) -> None:
    await put(client, "clip", payload(1000))
    connection = await raw_connect(client)
    await connection.send_head("HEAD", "/videos/clip", {})
    await connection.send_head("GET", "/healthz", {"Connection": "close"})
    head = await connection.response(head=True)
    # Had HEAD sent a body, its bytes would be read here as the next status line.
    after = await connection.response()
    assert (head.status, after.status) == (200, 200)
    assert head.headers["Content-Length"] == "1000"


async def test_get_missing_key_is_404(client: Client) -> None:
    await assert_error(await client.get("/videos/absent"), 404, "not_found")


async def test_head_missing_key_is_404(client: Client) -> None:
    assert (await client.head("/videos/absent")).status == 404


async def test_delete_answers_204_and_removes(client: Client) -> None:
    await put(client, "clip", b"data")
    response = await client.delete("/videos/clip")
    assert (response.status, await response.read()) == (204, b"")
    assert (await client.get("/videos/clip")).status == 404


async def test_delete_is_idempotent(client: Client) -> None:
    await put(client, "clip", b"data")
    await client.delete("/videos/clip")
    assert (await client.delete("/videos/clip")).status == 204


async def test_delete_of_a_never_stored_key_is_204(client: Client) -> None:
    assert (await client.delete("/videos/never")).status == 204


async def test_delete_leaves_other_keys(client: Client) -> None:
    await put(client, "a", b"aaa")
    await put(client, "b", b"bbb")
    await client.delete("/videos/a")
    assert await get_bytes(client, "b") == b"bbb"


async def test_zero_byte_object_downloads_empty(client: Client) -> None:
    await put(client, "empty", b"")
    response = await client.get("/videos/empty")
    assert (response.status, response.headers["Content-Length"]) == (200, "0")
    assert await response.read() == b""


# ---- listing ----------------------------------------------------------------------


async def test_list_items_are_sorted_and_complete(client: Client) -> None:
    for key in ("b.mp4", "a/2.webm", "a/1.mp4", "c"):
        await put(client, key, key.encode())
    listing = await (await client.get("/videos")).json()
    assert [item["key"] for item in listing["items"]] == ["a/1.mp4", "a/2.webm", "b.mp4", "c"]
    assert listing["next_after"] is None


async def test_list_item_fields(client: Client) -> None:
    answer = await put(client, "a.mp4", b"12345")
    head = await client.head("/videos/a.mp4")
    [item] = (await (await client.get("/videos")).json())["items"]
    assert set(item) == {"key", "size", "etag", "last_modified", "content_type"}
    assert (item["key"], item["size"], item["etag"]) == ("a.mp4", 5, answer["etag"])
    assert item["content_type"] == "video/mp4"
    listed = datetime.fromisoformat(item["last_modified"].replace("Z", "+00:00"))
    served = parsedate_to_datetime(head.headers["Last-Modified"])
    assert int(listed.timestamp()) == int(served.timestamp())


async def test_list_sorts_by_utf8_bytes(client: Client) -> None:
    # S3 lists in UTF-8 byte order; the fs store must agree.
    for key in ("中", "é", "z", "ÿ", "A", "a"):
        await put(client, key, b"x")
    listing = await (await client.get("/videos")).json()
    assert [item["key"] for item in listing["items"]] == ["A", "a", "z", "é", "ÿ", "中"]


async def test_list_prefix_filters(client: Client) -> None:
    for key in ("cats/1", "cats/2", "dogs/1", "cat"):
        await put(client, key, b"x")
    listing = await (await client.get("/videos", params={"prefix": "cats/"})).json()
    assert [item["key"] for item in listing["items"]] == ["cats/1", "cats/2"]


async def test_list_after_starts_past_the_key(client: Client) -> None:
    for key in ("a", "b", "c"):
        await put(client, key, b"x")
    listing = await (await client.get("/videos", params={"after": "a"})).json()
    assert [item["key"] for item in listing["items"]] == ["b", "c"]


async def test_list_pages_with_limit_and_next_after(client: Client) -> None:
    keys = [f"k{i}" for i in range(5)]
    for key in keys:
        await put(client, key, b"x")
    seen, after = [], ""
    for _ in range(3):
        page = await (await client.get("/videos", params={"limit": "2", "after": after})).json()
        seen += [item["key"] for item in page["items"]]
        after = page["next_after"]
        if after is None:
            break
    assert (seen, after) == (keys, None)


async def test_list_next_after_is_the_last_key_of_a_full_page(client: Client) -> None:
    for key in ("a", "b", "c"):
        await put(client, key, b"x")
    page = await (await client.get("/videos", params={"limit": "2"})).json()
    assert page["next_after"] == "b"


async def test_list_default_limit_is_100(client: Client) -> None:
    for i in range(101):
        await put(client, f"k{i:03}", b"")
    page = await (await client.get("/videos")).json()
    assert (len(page["items"]), page["next_after"]) == (100, "k099")


async def test_list_accepts_limit_1000(fs_client: Client) -> None:
    assert (await fs_client.get("/videos", params={"limit": "1000"})).status == 200


# Superscript two and Arabic-Indic ten are digits to str.isdigit; int() refuses
# 5,000 ASCII ones.
@pytest.mark.parametrize(
    "limit", ["0", "1001", "-1", "ten", "", "2.5", "\u00b2", "\u0661\u0660", "9" * 5000]
)
async def test_list_bad_limit_is_400_json(fs_client: Client, limit: str) -> None:
    response = await fs_client.get("/videos", params={"limit": limit})
    assert response.status == 400
    assert (await response.json())["error"] == "invalid_query"


async def test_list_limit_of_unicode_digits_is_400(fs_client: Client) -> None:
    response = await fs_client.get("/videos", params={"limit": "²"})
    assert response.status == 400


async def test_list_of_an_empty_store(client: Client) -> None:
    assert await (await client.get("/videos")).json() == {"items": [], "next_after": None}


# ---- aliases ----------------------------------------------------------------------


async def test_post_upload_stores_under_a_new_key(fs_client: Client) -> None:
    response = await fs_client.post("/upload", data=b"alias", skip_auto_headers=NO_AUTO_TYPE)
    assert response.status == 201
    key = (await response.json())["key"]
    assert ULID_RE.fullmatch(key)
    assert await get_bytes(fs_client, key) == b"alias"


async def test_post_upload_key_is_put(fs_client: Client) -> None:
    response = await fs_client.post("/upload/dir/a.mp4", data=b"v1", skip_auto_headers=NO_AUTO_TYPE)
    assert (response.status, response.headers["Location"]) == (201, "/videos/dir/a.mp4")
    await fs_client.post("/upload/dir/a.mp4", data=b"v2", skip_auto_headers=NO_AUTO_TYPE)
    assert await get_bytes(fs_client, "dir/a.mp4") == b"v2"


async def test_download_alias_is_get(fs_client: Client) -> None:
    body = payload(777)
    await put(fs_client, "dir/a.mp4", body)
    response = await fs_client.get("/download/dir/a.mp4")
    assert (response.status, await response.read()) == (200, body)
    assert response.headers["ETag"] == (await fs_client.head("/videos/dir/a.mp4")).headers["ETag"]


async def test_download_alias_validates_the_key(fs_client: Client) -> None:
    await assert_error(await fs_client.get("/download/a%5Cb"), 400, "invalid_key")


# ---- content types -----------------------------------------------------------------


async def test_content_type_header_is_stored(client: Client) -> None:
    answer = await put(client, "clip.mp4", b"x", **{"Content-Type": "video/webm; codecs=vp9"})
    response = await client.get("/videos/clip.mp4")
    assert answer["content_type"] == response.headers["Content-Type"] == "video/webm; codecs=vp9"


@pytest.mark.parametrize("value", ["garbage", "video/mp4 x", "vidéo/mp4"])
async def test_garbage_content_type_is_400_and_stores_nothing(
    fs_client: Client, value: str
) -> None:
    response = await fs_client.put(
        "/videos/clip", data=b"x", headers={"Content-Type": value.encode().decode("latin-1")}
    )
    await assert_error(response, 400, "invalid_content_type")
    assert (await fs_client.get("/videos/clip")).status == 404


@pytest.mark.parametrize(
    ("key", "expected"),
    [("a.webm", "video/webm"), ("b.MKV", "video/x-matroska"), ("c.ts", "video/mp2t")],
)
async def test_content_type_is_guessed_from_the_key(
    fs_client: Client, key: str, expected: str
) -> None:
    assert (await put(fs_client, key, MP4_HEAD))["content_type"] == expected
    assert (await fs_client.head(path_of(key))).headers["Content-Type"] == expected


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (MP4_HEAD, "video/mp4"),
        (WEBM_HEAD, "video/webm"),
        (TS_HEAD, "video/mp2t"),
        (OGG_HEAD, "video/ogg"),
        (b"plain bytes", "application/octet-stream"),
    ],
)
async def test_content_type_is_sniffed_without_header_or_extension(
    fs_client: Client, head: bytes, expected: str
) -> None:
    response = await fs_client.post(
        "/videos", data=head + payload(1000), skip_auto_headers=NO_AUTO_TYPE
    )
    key = (await response.json())["key"]
    assert (await fs_client.head(path_of(key))).headers["Content-Type"] == expected


async def test_sniffing_a_chunked_upload_keeps_every_byte(client: Client) -> None:
    body = MP4_HEAD + payload(200_000)

    async def pieces() -> Any:
        for start in range(0, len(body), 7):
            yield body[start : start + 7]
            if start > 2000:
                yield body[start + 7 :]
                return

    response = await client.put("/videos/sniffed", data=pieces(), skip_auto_headers=NO_AUTO_TYPE)
    assert (await response.json())["content_type"] == "video/mp4"
    assert await get_bytes(client, "sniffed") == body


async def test_sniffed_multipart_upload_keeps_every_byte(client: Client) -> None:
    body = WEBM_HEAD + payload(PART_SIZE + 1000)
    response = await client.put("/videos/big", data=body, skip_auto_headers=NO_AUTO_TYPE)
    assert (await response.json())["content_type"] == "video/webm"
    assert await get_bytes(client, "big") == body


# ---- errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("PATCH", "/videos/a"), ("DELETE", "/videos"), ("PUT", "/videos"), ("POST", "/healthz")],
)
async def test_wrong_method_is_405_json_with_allow(
    fs_client: Client, method: str, path: str
) -> None:
    response = await fs_client.request(method, path)
    await assert_error(response, 405, "method_not_allowed")
    assert "Allow" in response.headers


async def test_unknown_path_is_404_json(fs_client: Client) -> None:
    await assert_error(await fs_client.get("/nope"), 404, "not_found")


# ---- health -------------------------------------------------------------------------


async def test_healthz(fs_client: Client) -> None:
    response = await fs_client.get("/healthz")
    assert (response.status, await response.json()) == (200, {"status": "ok"})


async def test_readyz_when_the_backend_answers(client: Client, backend: str) -> None:
    response = await client.get("/readyz")
    assert response.status == 200
    assert (await response.json())["backend"] == backend


async def test_readyz_is_503_when_s3_is_unreachable(
    make_config: Callable[..., Config], start_vidproxy: Callable[..., Any]
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    client = await start_vidproxy(make_config("s3", s3={"endpoint_url": nowhere}))
    await assert_error(await client.get("/readyz"), 503, "upstream_unavailable")


async def test_readyz_is_503_when_the_bucket_is_missing(
    make_config: Callable[..., Config], start_vidproxy: Callable[..., Any]
) -> None:
    client = await start_vidproxy(make_config("s3", s3={"bucket": "no-such-bucket-here"}))
    assert (await client.get("/readyz")).status == 503


async def test_readyz_is_503_when_the_data_dir_is_gone(
    make_config: Callable[..., Config], start_vidproxy: Callable[..., Any], tmp_path: Path
) -> None:
    client = await start_vidproxy(make_config("fs"))
    (tmp_path / "data" / "objects").rmdir()
    await assert_error(await client.get("/readyz"), 503, "upstream_unavailable")


async def test_unreachable_s3_makes_get_503(
    make_config: Callable[..., Config], start_vidproxy: Callable[..., Any]
) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    client = await start_vidproxy(make_config("s3", s3={"endpoint_url": nowhere}))
    response = await client.get("/videos/a")
    await assert_error(response, 503, "upstream_unavailable")
    assert "Retry-After" in response.headers


async def test_s3_error_answer_makes_get_502(
    make_config: Callable[..., Config], start_vidproxy: Callable[..., Any]
) -> None:
    client = await start_vidproxy(make_config("s3", s3={"bucket": "no-such-bucket-here"}))
    await assert_error(await client.get("/videos/a"), 502, "upstream_error")


async def test_s3_error_answer_makes_put_502(
    make_config: Callable[..., Config], start_vidproxy: Callable[..., Any]
) -> None:
    client = await start_vidproxy(make_config("s3", s3={"bucket": "no-such-bucket-here"}))
    await assert_error(await client.put("/videos/a", data=b"x"), 502, "upstream_error")


# ---- reads racing writes -------------------------------------------------------------


async def test_reads_during_overwrites_get_one_whole_version(client: Client) -> None:
    bodies = [payload(50_000, seed) for seed in (1, 2)]
    await put(client, "hot", bodies[0])
    answers: list[tuple[int, bool]] = []

    async def read_many() -> None:
        for _ in range(100):
            response = await client.get("/videos/hot")
            answers.append((response.status, await response.read() in bodies))

    async def overwrite_many() -> None:
        for i in range(100):
            await put(client, "hot", bodies[i % 2])

    await asyncio.gather(read_many(), read_many(), overwrite_many())
    assert set(answers) == {(200, True)}


async def test_deleted_while_read_is_404_or_whole(client: Client) -> None:
    body = payload(50_000)
    answers: list[tuple[int, bool]] = []

    async def read_many() -> None:
        for _ in range(100):
            response = await client.get("/videos/hot")
            answers.append((response.status, await response.read() == body))

    async def put_and_delete_many() -> None:
        for _ in range(50):
            await put(client, "hot", body)
            assert (await client.delete("/videos/hot")).status == 204

    await asyncio.gather(read_many(), put_and_delete_many())
    assert set(answers) <= {(200, True), (404, False)}


async def test_listing_never_shows_the_reserved_prefix(
    make_config: Callable[..., Config], start_vidproxy: Callable[..., Any], s3: Any, bucket: str
) -> None:
    client = await start_vidproxy(make_config("s3"))
    for name in ("a", "b", "c"):
        s3.put_object(Bucket=bucket, Key=f".vidproxy/{name}", Body=b"record")
    for key in ("-early.mp4", "zz.mp4", "zzz.mp4"):  # "-" sorts before ".vidproxy/"
        await put(client, key, payload(10))
    listed = await client.get("/videos", params={"limit": "2"})
    page = await listed.json()
    # The page is filled from past the records, not cut short by them.
    assert [item["key"] for item in page["items"]] == ["-early.mp4", "zz.mp4"]
    rest = await client.get("/videos", params={"after": page["next_after"]})
    assert [item["key"] for item in (await rest.json())["items"]] == ["zzz.mp4"]
    among = await client.get("/videos", params={"after": ".vidproxy/a"})
    assert [item["key"] for item in (await among.json())["items"]] == ["zz.mp4", "zzz.mp4"]
    hidden = await client.get("/videos", params={"prefix": ".vidproxy/"})
    assert (await hidden.json())["items"] == []
    await assert_error(await client.get("/videos/.vidproxy/a"), 400, "invalid_key")
