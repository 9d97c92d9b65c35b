"""tus 1.0.0 at /uploads, raw HTTP: every status the protocol answers, on fs and
on S3 (moto, and rclone serve s3), bytes compared with what GET /videos gives back."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from botocore.exceptions import ClientError
from conftest import Connect, RawConnection
from rclone_rig import boto3_client, new_bucket, rclone_endpoint_fixture  # noqa: F401
from rigs.tus import OCTETS, TUS, checksum_header, create, metadata, patch

from vidproxy.config import Config
from vidproxy.units import MiB

PART = 5 * MiB


@pytest.fixture(params=["fs", "s3", "rclone"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def s3_side(backend: str, request: pytest.FixtureRequest) -> tuple[Any, str] | None:
    """A boto3 client and the bucket vidproxy stores in, to look behind its back."""
    if backend == "s3":
        return request.getfixturevalue("s3"), request.getfixturevalue("bucket")
    if backend == "rclone":
        s3 = boto3_client(request.getfixturevalue("rclone_endpoint"))
        return s3, new_bucket(s3)
    return None


@pytest.fixture
def tus_config(
    backend: str,
    make_config: Callable[..., Config],
    s3_side: tuple[Any, str] | None,
    request: pytest.FixtureRequest,
) -> Callable[..., Config]:
    def make(**sections: dict[str, Any]) -> Config:
        if backend != "rclone":
            return make_config(backend, **sections)
        assert s3_side is not None
        endpoint = request.getfixturevalue("rclone_endpoint")
        # rclone answers 500 now and then to a GET of an object being overwritten
        # (a record read by HEAD while a PATCH saves it): one retry, as for moto.
        s3 = {"endpoint_url": endpoint, "bucket": s3_side[1], "max_attempts": 2}
        s3.update(sections.pop("s3", {}))
        return make_config("s3", s3=s3, **sections)

    return make


@pytest.fixture
async def client(
    tus_config: Callable[..., Config], start_vidproxy: Callable[..., Any]
) -> TestClient[Any, Any]:
    return await start_vidproxy(tus_config())  # type: ignore[no-any-return]


@pytest.fixture
def pending_uploads(s3_side: tuple[Any, str] | None, tmp_path: Any) -> Callable[[], Any]:
    """Multipart uploads left in the bucket; on fs, upload data files left."""

    async def pending() -> list[str]:
        if s3_side is None:
            return sorted(p.name for p in (tmp_path / "data" / "uploads").glob("*.data"))
        s3, bucket = s3_side
        try:
            response = await asyncio.to_thread(s3.list_multipart_uploads, Bucket=bucket)
        except ClientError:
            return []  # rclone: NoSuchUpload for a bucket that never had one
        return [upload["Key"] for upload in response.get("Uploads", [])]

    return pending


def payload(size: int, seed: int = 1) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest() * 2048  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


async def upload_in_pieces(
    client: TestClient[Any, Any], body: bytes, pieces: list[int], **meta: str
) -> Any:
    location = await create(client, len(body), **meta)
    offset = 0
    response = None
    for size in pieces:
        response = await patch(client, location, offset, body[offset : offset + size])
        assert response.status == 204, await response.text()
        offset += size
        assert response.headers["Upload-Offset"] == str(offset)
    return response


async def fetched(client: TestClient[Any, Any], key: str) -> bytes:
    response = await client.get(f"/videos/{key}")
    assert response.status == 200, await response.text()
    return await response.read()


async def test_options_names_version_extensions_size_and_checksums(
    client: TestClient[Any, Any],
) -> None:
    response = await client.options("/uploads")
    assert response.status == 204
    assert response.headers["Tus-Version"] == "1.0.0"
    extensions = set(response.headers["Tus-Extension"].split(","))
    assert {"creation", "creation-with-upload", "creation-defer-length"} <= extensions
    assert {"termination", "expiration", "checksum"} <= extensions
    assert response.headers["Tus-Max-Size"] == str(100 * 1024**3)
    assert set(response.headers["Tus-Checksum-Algorithm"].split(",")) == {"sha1", "sha256", "md5"}
    assert "Tus-Resumable" not in response.headers


@pytest.mark.parametrize(
    "pieces",
    [
        [1, 1024 * 1024 - 1],  # a byte, then the rest of a small upload
        [3 * MiB, 3 * MiB, 5 * MiB + 17],  # tails below a part, carried over
        [11 * MiB + 5],  # one PATCH of several parts
        [PART, PART],  # on part boundaries
    ],
)
async def test_an_upload_in_pieces_is_stored_whole(
    client: TestClient[Any, Any], pieces: list[int]
) -> None:
    body = payload(sum(pieces))
    last = await upload_in_pieces(client, body, pieces, key="clips/a.mp4")
    assert last.headers["X-Video-Key"] == "clips/a.mp4"
    assert last.headers["X-Content-SHA256"] == hashlib.sha256(body).hexdigest()
    assert await fetched(client, "clips/a.mp4") == body


async def error_of(response: Any, status: int, code: str) -> None:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    if response.method != "HEAD":  # a HEAD answer has the headers only
        assert (await response.json())["error"] == code
    assert response.headers["Tus-Resumable"] == "1.0.0"


async def offset_of(client: TestClient[Any, Any], location: str) -> int:
    response = await client.head(location, headers=TUS)
    assert response.status == 200
    return int(response.headers["Upload-Offset"])


async def test_head_tells_offset_length_metadata_and_no_store(
    client: TestClient[Any, Any],
) -> None:
    location = await create(client, 10, key="h.mp4", filename="h.mp4")
    await patch(client, location, 0, b"0123")
    response = await client.head(location, headers=TUS)
    assert response.status == 200
    assert response.headers["Upload-Offset"] == "4"
    assert response.headers["Upload-Length"] == "10"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Tus-Resumable"] == "1.0.0"
    assert response.headers["Upload-Metadata"] == metadata(key="h.mp4", filename="h.mp4")
    assert "GMT" in response.headers["Upload-Expires"]


@pytest.mark.parametrize("version", [None, "0.2.2", "2.0.0"])
async def test_another_tus_version_gets_412_with_tus_version(
    client: TestClient[Any, Any], version: str | None
) -> None:
    headers = {"Upload-Length": "3"} | ({"Tus-Resumable": version} if version else {})
    response = await client.post("/uploads", headers=headers)
    await error_of(response, 412, "tus_version_unsupported")
    assert response.headers["Tus-Version"] == "1.0.0"
    location = await create(client, 3)
    for method in ("HEAD", "PATCH", "DELETE"):
        response = await client.request(method, location, headers={"Upload-Offset": "0"})
        assert response.status == 412
        assert response.headers["Tus-Version"] == "1.0.0"


async def test_patch_without_offset_octet_stream_gets_415(client: TestClient[Any, Any]) -> None:
    location = await create(client, 3)
    headers = {**TUS, "Upload-Offset": "0", "Content-Type": "application/octet-stream"}
    await error_of(await client.patch(location, data=b"abc", headers=headers), 415,
                   "unsupported_media_type")  # fmt: skip
    assert await offset_of(client, location) == 0


async def test_patch_at_another_offset_gets_409_and_stores_nothing(
    client: TestClient[Any, Any],
) -> None:
    location = await create(client, 6)
    assert (await patch(client, location, 0, b"abc")).status == 204
    await error_of(await patch(client, location, 0, b"abc"), 409, "offset_mismatch")
    await error_of(await patch(client, location, 5, b"f"), 409, "offset_mismatch")
    assert (await patch(client, location, 3, b"def")).status == 204
    assert await fetched(client, location.rsplit("/", 1)[1]) == b"abcdef"


async def test_unknown_or_terminated_upload_gets_404(
    client: TestClient[Any, Any], pending_uploads: Any
) -> None:
    await error_of(await client.head("/uploads/01JD0000000000000000000000", headers=TUS), 404,
                   "not_found")  # fmt: skip
    await error_of(await client.head("/uploads/..%2Fetc", headers=TUS), 404, "not_found")
    body = payload(6 * MiB)
    location = await create(client, len(body))
    assert (await patch(client, location, 0, body[: 5 * MiB + 3])).status == 204
    response = await client.delete(location, headers=TUS)
    assert response.status == 204
    assert response.headers["Tus-Resumable"] == "1.0.0"
    await error_of(await client.head(location, headers=TUS), 404, "not_found")
    await error_of(await patch(client, location, 5 * MiB + 3, body[5 * MiB + 3 :]), 404,
                   "not_found")  # fmt: skip
    assert await pending_uploads() == []


async def test_a_checksum_mismatch_gets_460_and_keeps_none_of_its_bytes(
    client: TestClient[Any, Any],
) -> None:
    body = payload(7 * MiB, seed=3)
    location = await create(client, len(body), key="sum.bin")
    first = body[: 6 * MiB]  # more than a part: staged, then discarded
    wrong = base64.b64encode(hashlib.sha1(b"other").digest()).decode()
    response = await patch(client, location, 0, first, **{"Upload-Checksum": f"sha1 {wrong}"})
    await error_of(response, 460, "upload_checksum_mismatch")
    assert await offset_of(client, location) == 0
    for algorithm, start, end in (("sha256", 0, 3 * MiB), ("md5", 3 * MiB, 7 * MiB)):
        piece = body[start:end]
        digest = base64.b64encode(hashlib.new(algorithm, piece).digest()).decode()
        checksum = {"Upload-Checksum": f"{algorithm} {digest}"}
        assert (await patch(client, location, start, piece, **checksum)).status == 204
    assert await fetched(client, "sum.bin") == body


def reserved_objects(s3_side: tuple[Any, str] | None) -> list[str]:
    """Objects under .vidproxy/uploads/ but the records (.info)."""
    if s3_side is None:
        return []
    s3, bucket = s3_side
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=".vidproxy/uploads/")
    keys = [str(item["Key"]) for item in listed.get("Contents", [])]
    return sorted(key for key in keys if not key.endswith(".info"))


async def test_a_mismatch_of_other_bytes_over_two_parts_leaves_the_upload_finishable(
    client: TestClient[Any, Any], s3_side: tuple[Any, str] | None, pending_uploads: Any
) -> None:
    # rclone refuses a part number again with other bytes: a checksummed PATCH
    # must upload no part before its checksum matched.
    body = payload(13 * MiB, seed=21)
    location = await create(client, len(body), key="resent.bin")
    first = body[: 2 * PART + MiB]
    other = payload(len(first), seed=22)
    response = await patch(client, location, 0, other, **checksum_header("sha256", first))
    await error_of(response, 460, "upload_checksum_mismatch")
    assert await offset_of(client, location) == 0
    assert reserved_objects(s3_side) == []
    response = await patch(client, location, 0, first, **checksum_header("sha256", first))
    assert response.status == 204, await response.text()
    assert response.headers["Upload-Offset"] == str(len(first))
    rest = body[len(first) :]
    response = await patch(client, location, len(first), rest, **checksum_header("md5", rest))
    assert response.status == 204, await response.text()
    assert response.headers["X-Content-SHA256"] == hashlib.sha256(body).hexdigest()
    assert await fetched(client, "resent.bin") == body
    head = await client.head("/videos/resent.bin")
    assert head.headers["X-Content-SHA256"] == hashlib.sha256(body).hexdigest()
    assert reserved_objects(s3_side) == []
    assert await pending_uploads() == []


def leave_staged(s3_side: tuple[Any, str] | None, location: str) -> None:
    """A staged part, as a process killed in a checksummed PATCH leaves it."""
    if s3_side is not None:
        s3, bucket = s3_side
        key = f".vidproxy/uploads/{location.rsplit('/', 1)[1]}.stage.1.1"
        s3.put_object(Bucket=bucket, Key=key, Body=payload(PART))


async def test_delete_removes_staged_parts_a_crash_left(
    client: TestClient[Any, Any], s3_side: tuple[Any, str] | None, pending_uploads: Any
) -> None:
    body = payload(6 * MiB)
    location = await create(client, len(body))
    assert (await patch(client, location, 0, body[: 5 * MiB + 3])).status == 204
    leave_staged(s3_side, location)
    assert (await client.delete(location, headers=TUS)).status == 204
    assert reserved_objects(s3_side) == []
    assert await pending_uploads() == []


async def test_a_checksummed_patch_cut_off_keeps_nothing_and_no_staged_part(
    client: TestClient[Any, Any], s3_side: tuple[Any, str] | None, raw_connect: Connect,
    wait_until: Any,
) -> None:  # fmt: skip
    body = payload(13 * MiB, seed=23)
    location = await create(client, len(body), key="cut-sum.bin")
    connection = await raw_connect(client)
    headers = {**OCTETS, "Upload-Offset": "0", "Content-Length": str(len(body))}
    await connection.send_head("PATCH", location, {**headers, **checksum_header("sha1", body)})
    await connection.send(body[: 2 * PART + MiB])
    await connection.close()

    async def unlocked() -> bool:  # the PATCH is over once the upload is free again
        response = await patch(client, location, 1, b"x")
        return response.status == 409

    await wait_until(unlocked, "the cut PATCH over", within=10)
    assert await offset_of(client, location) == 0
    assert reserved_objects(s3_side) == []
    response = await patch(client, location, 0, body, **checksum_header("sha1", body))
    assert response.status == 204, await response.text()
    assert await fetched(client, "cut-sum.bin") == body


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({"Upload-Length": "3", "Upload-Checksum": "crc32 AAAA"}, "unsupported_checksum"),
        ({"Upload-Length": "x"}, "invalid_upload_header"),
        ({}, "invalid_upload_header"),
        ({"Upload-Length": "3", "Upload-Defer-Length": "1"}, "invalid_upload_header"),
        ({"Upload-Defer-Length": "2"}, "invalid_upload_header"),
        ({"Upload-Length": "3", "Upload-Metadata": "key not-base64!"}, "invalid_upload_header"),
        ({"Upload-Length": "3", "Upload-Metadata": metadata(key="a/../b")}, "invalid_key"),
        ({"Upload-Length": "3", "Upload-Metadata": metadata(key=".vidproxy/x")}, "invalid_key"),
        ({"Upload-Length": "3", "Upload-Metadata": metadata(filetype="a\nb")},
         "invalid_content_type"),
    ],
)  # fmt: skip
async def test_bad_creation_headers_get_400(
    client: TestClient[Any, Any], headers: dict[str, str], code: str
) -> None:
    sent = {**TUS, **headers}
    if "Upload-Checksum" in headers:
        sent["Content-Type"] = "application/offset+octet-stream"
        await error_of(await client.post("/uploads", data=b"abc", headers=sent), 400, code)
    else:
        await error_of(await client.post("/uploads", headers=sent), 400, code)


async def test_bad_patch_headers_get_400(client: TestClient[Any, Any]) -> None:
    location = await create(client, 3)
    await error_of(await client.patch(location, data=b"a", headers=OCTETS), 400,
                   "invalid_upload_header")  # fmt: skip
    await error_of(await patch(client, location, -1, b"a"), 400, "invalid_upload_header")
    await error_of(await patch(client, location, 0, b"a", **{"Upload-Length": "9"}), 400,
                   "invalid_upload_header")  # fmt: skip


async def test_too_large_gets_413(
    make_config: Callable[..., Config], start_vidproxy: Callable[..., Any]
) -> None:
    client = await start_vidproxy(make_config("fs", server={"max_upload_bytes": 1000}))
    response = await client.post("/uploads", headers={**TUS, "Upload-Length": "1001"})
    await error_of(response, 413, "too_large")
    location = await create(client, 10)
    await error_of(await patch(client, location, 0, b"x" * 11), 413, "too_large")
    deferred = await create(client, None)
    await error_of(await patch(client, deferred, 0, b"", **{"Upload-Length": "1001"}), 413,
                   "too_large")  # fmt: skip


async def test_creation_with_upload_stores_the_first_bytes(client: TestClient[Any, Any]) -> None:
    headers = {**OCTETS, "Upload-Length": "10", "Upload-Metadata": metadata(key="cwu.bin")}
    response = await client.post("/uploads", data=b"hello", headers=headers)
    assert response.status == 201
    assert response.headers["Upload-Offset"] == "5"
    assert response.headers["X-Video-Key"] == "cwu.bin"
    location = response.headers["Location"]
    assert (await patch(client, location, 5, b"world")).status == 204
    assert await fetched(client, "cwu.bin") == b"helloworld"


async def test_a_whole_upload_in_the_creation_request(client: TestClient[Any, Any]) -> None:
    body = payload(6 * MiB)
    headers = {**OCTETS, "Upload-Length": str(len(body)), "Upload-Metadata": metadata(key="one")}
    response = await client.post("/uploads", data=body, headers=headers)
    assert response.status == 201
    assert response.headers["X-Content-SHA256"] == hashlib.sha256(body).hexdigest()
    assert await fetched(client, "one") == body


@pytest.mark.parametrize("sizes", [[3 * MiB, 4 * MiB, 1], [6 * MiB, 0], [1, 2]])
async def test_a_deferred_length_is_declared_by_a_later_patch(
    client: TestClient[Any, Any], sizes: list[int]
) -> None:
    body = payload(sum(sizes), seed=5)
    location = await create(client, None, key="deferred.bin")
    response = await client.head(location, headers=TUS)
    assert response.headers["Upload-Defer-Length"] == "1"
    assert "Upload-Length" not in response.headers
    offset = 0
    for index, size in enumerate(sizes):
        last = index == len(sizes) - 1
        extra = {"Upload-Length": str(len(body))} if last else {}
        response = await patch(client, location, offset, body[offset : offset + size], **extra)
        assert response.status == 204, await response.text()
        offset += size
    # tusd #1385: the tail must be part of the object when the length comes last.
    assert response.headers["X-Content-SHA256"] == hashlib.sha256(body).hexdigest()
    assert await fetched(client, "deferred.bin") == body


async def test_a_zero_length_upload_is_an_empty_video(client: TestClient[Any, Any]) -> None:
    response = await client.post(
        "/uploads", headers={**TUS, "Upload-Length": "0", "Upload-Metadata": metadata(key="e")}
    )
    assert response.status == 201
    assert response.headers["X-Content-SHA256"] == hashlib.sha256(b"").hexdigest()
    assert await fetched(client, "e") == b""


async def test_the_video_key_defaults_to_the_upload_id(client: TestClient[Any, Any]) -> None:
    location = await create(client, 3)
    response = await patch(client, location, 0, b"abc")
    upload_id = location.rsplit("/", 1)[1]
    assert response.headers["X-Video-Key"] == upload_id
    assert await fetched(client, upload_id) == b"abc"


async def test_key_with_spaces_is_percent_encoded_in_x_video_key(
    client: TestClient[Any, Any],
) -> None:
    location = await create(client, 1, key="a dir/ä b.mp4")
    response = await patch(client, location, 0, b"x")
    assert response.headers["X-Video-Key"] == "a%20dir/%C3%A4%20b.mp4"


async def test_method_override_carries_patch_head_and_delete(
    client: TestClient[Any, Any],
) -> None:
    location = await create(client, 6, key="ov")
    headers = {**OCTETS, "Upload-Offset": "0", "X-HTTP-Method-Override": "PATCH"}
    response = await client.post(location, data=b"abc", headers=headers)
    assert response.status == 204
    response = await client.post(location, headers={**TUS, "X-HTTP-Method-Override": "HEAD"})
    assert response.headers["Upload-Offset"] == "3"
    response = await client.post(location, headers={**TUS, "X-HTTP-Method-Override": "DELETE"})
    assert response.status == 204
    await error_of(await client.head(location, headers=TUS), 404, "not_found")
    await error_of(await client.post(location, headers=TUS), 405, "method_not_allowed")


async def test_filetype_sets_the_content_type(client: TestClient[Any, Any]) -> None:
    location = await create(client, 3, key="noext", filetype="video/webm")
    await patch(client, location, 0, b"abc")
    response = await client.head("/videos/noext")
    assert response.headers["Content-Type"] == "video/webm"
    location = await create(client, 3, key="sniffed")
    await patch(client, location, 0, b"abc")
    response = await client.head("/videos/sniffed")
    assert response.headers["Content-Type"] == "application/octet-stream"


async def test_create_only_refuses_an_existing_key(client: TestClient[Any, Any]) -> None:
    assert (await client.put("/videos/taken", data=b"old")).status == 201
    headers = {
        **TUS,
        "Upload-Length": "3",
        "Upload-Metadata": metadata(key="taken") + ",create_only",
    }
    await error_of(await client.post("/uploads", headers=headers), 412, "precondition_failed")
    location = await create(client, 3, key="free", create_only="1")
    assert (await patch(client, location, 0, b"new")).status == 204
    assert await fetched(client, "free") == b"new"


async def test_the_old_video_stays_until_the_last_byte(client: TestClient[Any, Any]) -> None:
    assert (await client.put("/videos/v.mp4", data=b"old bytes")).status == 201
    assert await fetched(client, "v.mp4") == b"old bytes"  # cached on S3
    body = payload(6 * MiB)
    location = await create(client, len(body), key="v.mp4")
    await patch(client, location, 0, body[: 5 * MiB + 1])
    assert await fetched(client, "v.mp4") == b"old bytes"
    await patch(client, location, 5 * MiB + 1, body[5 * MiB + 1 :])
    assert await fetched(client, "v.mp4") == body


async def test_a_finished_upload_still_answers_head(client: TestClient[Any, Any]) -> None:
    location = await create(client, 3, key="done")
    await patch(client, location, 0, b"abc")
    response = await client.head(location, headers=TUS)
    assert response.status == 200
    assert response.headers["Upload-Offset"] == "3"
    assert response.headers["X-Content-SHA256"] == hashlib.sha256(b"abc").hexdigest()
    await error_of(await patch(client, location, 3, b""), 409, "offset_mismatch")


async def test_uploads_records_are_not_listed(client: TestClient[Any, Any]) -> None:
    location = await create(client, 10, key="listed")
    await patch(client, location, 0, b"abc")
    response = await client.get("/videos")
    assert [item["key"] for item in (await response.json())["items"]] == []


# ---- an offset is a promise: cut off, locked, expired --------------------------


async def send_part_of_a_patch(
    raw_connect: Connect, client: TestClient[Any, Any], location: str, offset: int,
    declared: int, sent: bytes,
) -> RawConnection:  # fmt: skip
    connection = await raw_connect(client)
    headers = {**OCTETS, "Upload-Offset": str(offset), "Content-Length": str(declared)}
    await connection.send_head("PATCH", location, headers)
    await connection.send(sent)
    return connection


@pytest.mark.parametrize("cut_at", [1000, 5 * MiB + 1000, 11 * MiB])
async def test_a_patch_cut_off_keeps_every_byte_that_arrived(
    client: TestClient[Any, Any], raw_connect: Connect, wait_until: Any, cut_at: int
) -> None:
    body = payload(12 * MiB, seed=7)
    location = await create(client, len(body), key="cut.bin")
    connection = await send_part_of_a_patch(
        raw_connect, client, location, 0, len(body), body[:cut_at]
    )

    async def cut_point_stored() -> bool:
        return await offset_of(client, location) == cut_at

    # Hang up mid-body. TCP delivers what was sent before the FIN, so the server
    # sees exactly ``cut_at`` bytes and then the end of the connection.
    await connection.close()
    await wait_until(cut_point_stored, f"offset {cut_at} after the cut", within=10)
    response = await patch(client, location, cut_at, body[cut_at:])
    assert response.status == 204
    assert response.headers["X-Content-SHA256"] == hashlib.sha256(body).hexdigest()
    assert await fetched(client, "cut.bin") == body


async def test_a_second_patch_while_one_runs_gets_423(
    client: TestClient[Any, Any], raw_connect: Connect, wait_until: Any
) -> None:
    location = await create(client, 100, key="locked")
    connection = await send_part_of_a_patch(raw_connect, client, location, 0, 100, b"a" * 10)

    async def locked() -> bool:
        response = await patch(client, location, 0, b"b" * 10)
        return response.status == 423

    await wait_until(locked, "423 for the second PATCH")
    response = await patch(client, location, 0, b"b" * 10)
    await error_of(response, 423, "upload_locked")
    await connection.send(b"a" * 90)
    assert (await connection.response()).status == 204
    assert await fetched(client, "locked") == b"a" * 100


def edit_record(
    s3_side: tuple[Any, str] | None, tmp_path: Any, upload_id: str, **changes: Any
) -> None:
    """Change fields of an upload's stored record behind vidproxy's back."""
    name = f"{upload_id}.info"
    if s3_side is None:
        path = tmp_path / "data" / "uploads" / name
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
        return
    s3, bucket = s3_side
    key = f".vidproxy/uploads/{name}"
    record = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps({**record, **changes}).encode())


def expire_record(s3_side: tuple[Any, str] | None, tmp_path: Any, upload_id: str) -> None:
    """Move the record's expiry into the past, as time would."""
    edit_record(s3_side, tmp_path, upload_id, expires=time.time() - 1)


async def test_a_lost_hash_state_is_made_good_by_reading_the_object_back(
    client: TestClient[Any, Any], s3_side: tuple[Any, str] | None, tmp_path: Any
) -> None:
    # A process without libcrypto saves no state: the next one cannot resume the hash.
    body = payload(11 * MiB + 5, seed=13)
    location = await create(client, len(body), key="lost.bin")
    assert (await patch(client, location, 0, body[: 6 * MiB])).status == 204
    edit_record(s3_side, tmp_path, location.rsplit("/", 1)[1], sha256_state=None)
    response = await patch(client, location, 6 * MiB, body[6 * MiB :])
    assert response.headers["X-Content-SHA256"] == hashlib.sha256(body).hexdigest()
    assert (await client.head("/videos/lost.bin")).headers["X-Content-SHA256"] == (
        hashlib.sha256(body).hexdigest()
    )


async def test_an_expired_upload_gets_410(
    client: TestClient[Any, Any], s3_side: tuple[Any, str] | None, tmp_path: Any
) -> None:
    location = await create(client, 10)
    assert (await patch(client, location, 0, b"abc")).status == 204
    expire_record(s3_side, tmp_path, location.rsplit("/", 1)[1])
    await error_of(await client.head(location, headers=TUS), 410, "upload_expired")
    await error_of(await patch(client, location, 3, b"def"), 410, "upload_expired")


async def test_the_sweeper_drops_an_abandoned_upload_within_seconds(
    tus_config: Callable[..., Config], start_vidproxy: Callable[..., Any],
    pending_uploads: Any, wait_until: Any, s3_side: tuple[Any, str] | None,
) -> None:  # fmt: skip
    client = await start_vidproxy(tus_config(uploads={"expire_after": 1}))
    location = await create(client, 20 * MiB)
    assert (await patch(client, location, 0, payload(6 * MiB))).status == 204
    leave_staged(s3_side, location)

    async def gone() -> bool:
        response = await client.head(location, headers=TUS)
        no_objects = reserved_objects(s3_side) == []
        return response.status == 404 and await pending_uploads() == [] and no_objects

    async def counted() -> bool:
        # The sweeper counts once the record is gone: a HEAD can see it first.
        metrics = await (await client.get("/metrics")).text()
        return counter(metrics, 'vidproxy_tus_uploads_total{event="expired"}') == 1

    await wait_until(gone, "the expired upload swept", within=10)
    await wait_until(counted, "the expired upload counted")


async def test_the_sweeper_reads_no_record_written_within_expire_after(
    make_config: Callable[..., Config], start_vidproxy: Callable[..., Any], wait_until: Any
) -> None:
    uploads = {"expire_after": 3600, "sweep_interval": 0.05}
    client = await start_vidproxy(make_config("s3", uploads=uploads))
    for _ in range(3):
        await create(client, 10)

    async def requests(operation: str) -> float:
        metrics = await (await client.get("/metrics")).text()
        return counter(metrics, f'vidproxy_s3_requests_total{{operation="{operation}"}}')

    reads, lists = await requests("GetObject"), await requests("ListObjectsV2")

    async def swept_thrice() -> bool:
        return await requests("ListObjectsV2") >= lists + 3

    await wait_until(swept_thrice, "three sweeps over the live uploads")
    assert await requests("GetObject") == reads  # the listing's dates sufficed


async def test_head_while_a_patch_runs_shows_its_durable_progress(
    client: TestClient[Any, Any], raw_connect: Connect, wait_until: Any
) -> None:
    body = payload(12 * MiB, seed=9)
    location = await create(client, len(body), key="watched")
    connection = await send_part_of_a_patch(
        raw_connect, client, location, 0, len(body), body[: 6 * MiB]
    )

    async def first_part_durable() -> bool:
        return await offset_of(client, location) >= 4 * MiB

    # The HEADs read the record while the PATCH keeps writing it (If-Match on S3).
    await wait_until(first_part_durable, "the first 4 MiB durable during the PATCH")
    await connection.send(body[6 * MiB :])
    response = await connection.response()
    assert response.status == 204, response.body
    assert response.headers["X-Content-SHA256"] == hashlib.sha256(body).hexdigest()
    assert await fetched(client, "watched") == body


def counter(metrics: str, name: str) -> float:
    """The value of the sample ``name`` (labels included), 0 if absent."""
    for line in metrics.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def test_the_stale_upload_sweep_leaves_live_tus_uploads_alone(
    make_config: Callable[..., Config], start_vidproxy: Callable[..., Any], wait_until: Any
) -> None:
    # moto dates every multipart upload in 2010: each one is "stale" at once.
    config = make_config("s3", s3={"abort_stale_uploads_after": 1})
    client = await start_vidproxy(config)
    body = payload(7 * MiB)
    location = await create(client, len(body), key="kept")
    assert (await patch(client, location, 0, body[: 6 * MiB])).status == 204
    sweeps = 'vidproxy_s3_requests_total{operation="ListMultipartUploads"}'

    async def swept_twice_more(start: float) -> bool:
        metrics = await (await client.get("/metrics")).text()
        return counter(metrics, sweeps) >= start + 2

    start = counter(await (await client.get("/metrics")).text(), sweeps)
    await wait_until(lambda: swept_twice_more(start), "two more stale-upload sweeps", within=10)
    assert (await patch(client, location, 6 * MiB, body[6 * MiB :])).status == 204
    assert await fetched(client, "kept") == body


@pytest.mark.parametrize(("checksum", "reads"), [(False, 1), (True, 3)])
async def test_only_a_checksummed_patch_reads_its_parts_back(
    make_config: Callable[..., Config], start_vidproxy: Callable[..., Any],
    checksum: bool, reads: int,
) -> None:  # fmt: skip
    client = await start_vidproxy(make_config("s3"))
    body = payload(2 * PART + MiB, seed=24)
    location = await create(client, len(body) + 1)
    reads_so_far = 'vidproxy_s3_requests_total{operation="GetObject"}'
    start = counter(await (await client.get("/metrics")).text(), reads_so_far)
    headers = checksum_header("sha256", body) if checksum else {}
    assert (await patch(client, location, 0, body, **headers)).status == 204
    # The record, read once; a checksummed PATCH reads each staged part back.
    end = counter(await (await client.get("/metrics")).text(), reads_so_far)
    assert end - start == reads


async def test_metrics_count_tus_uploads_and_bytes(client: TestClient[Any, Any]) -> None:
    body = payload(6 * MiB)
    location = await create(client, len(body), key="counted")
    await patch(client, location, 0, body[:1000])
    assert (await client.head(location, headers=TUS)).status == 200  # where to resume
    await patch(client, location, 1000, body[1000:])
    abandoned = await create(client, 10)
    await client.delete(abandoned, headers=TUS)
    metrics = await (await client.get("/metrics")).text()
    for event, count in (("created", 2), ("resumed", 1), ("completed", 1), ("terminated", 1)):
        assert counter(metrics, f'vidproxy_tus_uploads_total{{event="{event}"}}') == count
    assert counter(metrics, "vidproxy_tus_stored_bytes_total") == len(body)


async def test_a_page_on_another_origin_may_speak_tus(
    make_config: Callable[..., Config], start_vidproxy: Callable[..., Any]
) -> None:
    origin = "https://page.example"
    client = await start_vidproxy(make_config("fs", server={"cors_origins": [origin]}))
    location = await create(client, 3)
    preflight = {
        "Origin": origin,
        "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": "tus-resumable, upload-offset, content-type",
    }
    for path in ("/uploads", location):
        response = await client.options(path, headers=preflight)
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == origin
        assert "Upload-Offset" in response.headers["Access-Control-Allow-Headers"]
    assert "PATCH" in response.headers["Access-Control-Allow-Methods"]
    response = await patch(client, location, 0, b"abc", Origin=origin)
    exposed = response.headers["Access-Control-Expose-Headers"]
    assert {"Upload-Offset", "X-Video-Key", "Tus-Resumable"} <= set(exposed.split(", "))


async def test_a_signed_creation_url_and_the_upload_s_own_signed_location(
    make_config: Callable[..., Config], start_vidproxy: Callable[..., Any]
) -> None:
    auth = {"write_tokens": ["w"], "read_tokens": ["r"], "signing_key": "k"}
    client = await start_vidproxy(make_config("fs", auth=auth))
    writer = {"Authorization": "Bearer w"}
    await error_of(await client.post("/uploads", headers={**TUS, "Upload-Length": "3"}), 401,
                   "unauthorized")  # fmt: skip
    grant = await client.post("/sign", json={"key": "s/a.bin", "method": "POST"}, headers=writer)
    url = (await grant.json())["url"]
    assert url.startswith("/uploads?key=s%2Fa.bin&expires=")
    other = {**TUS, "Upload-Length": "3", "Upload-Metadata": metadata(key="s/other.bin")}
    await error_of(await client.post(url, headers=other), 403, "forbidden")
    response = await client.post(url, headers={**TUS, "Upload-Length": "6"})
    assert response.status == 201
    assert response.headers["X-Video-Key"] == "s/a.bin"
    location = response.headers["Location"]
    assert "&sig=" in location
    bare = location.split("?")[0]
    await error_of(await patch(client, bare, 0, b"abc"), 401, "unauthorized")
    assert (await patch(client, location, 0, b"abc")).status == 204
    assert (await client.head(location, headers=TUS)).headers["Upload-Offset"] == "3"
    forged = location.rsplit("=", 1)[0] + "=" + "0" * 64
    await error_of(await patch(client, forged, 3, b"def"), 403, "forbidden")
    assert (await patch(client, location, 3, b"def")).status == 204
    assert await (await client.get("/videos/s/a.bin", headers=writer)).read() == b"abcdef"


async def test_tokens_guard_uploads_as_they_guard_put_and_get(
    make_config: Callable[..., Config], start_vidproxy: Callable[..., Any]
) -> None:
    auth = {"write_tokens": ["w"], "read_tokens": ["r"]}
    client = await start_vidproxy(make_config("fs", auth=auth))
    reader, writer = {"Authorization": "Bearer r"}, {"Authorization": "Bearer w"}
    assert (await client.options("/uploads", headers=reader)).status == 204
    assert (await client.options("/uploads")).status == 401
    await error_of(await client.post("/uploads", headers={**TUS, **reader, "Upload-Length": "1"}),
                   403, "forbidden")  # fmt: skip
    created = await client.post("/uploads", headers={**TUS, **writer, "Upload-Length": "1"})
    location = created.headers["Location"]
    assert (await client.head(location, headers={**TUS, **reader})).status == 200
    await error_of(await patch(client, location, 0, b"x", **reader), 403, "forbidden")
    assert (await patch(client, location, 0, b"x", **writer)).status == 204


async def test_a_stalled_patch_gets_408_and_keeps_what_arrived(
    tus_config: Callable[..., Config], start_vidproxy: Callable[..., Any], raw_connect: Connect
) -> None:
    client = await start_vidproxy(tus_config(server={"body_timeout": 0.5}))
    location = await create(client, 100)
    connection = await send_part_of_a_patch(raw_connect, client, location, 0, 100, b"s" * 40)
    response = await connection.response()
    assert response.status == 408
    assert response.headers["Tus-Resumable"] == "1.0.0"
    assert await offset_of(client, location) == 40


async def test_100_continue_only_for_a_patch_that_passes_the_checks(
    client: TestClient[Any, Any], raw_connect: Connect
) -> None:
    location = await create(client, 10)
    for headers, status in (
        ({"Tus-Resumable": "0.2.0", "Content-Type": "application/offset+octet-stream"}, 412),
        ({**TUS, "Content-Type": "text/plain"}, 415),
    ):
        connection = await raw_connect(client)
        await connection.send_head("PATCH", location, {
            **headers, "Upload-Offset": "0", "Content-Length": "10", "Expect": "100-continue",
        })  # fmt: skip
        first, answer = await connection.read_head()
        assert first == status  # no 100 Continue before it
        assert answer["Tus-Resumable"] == "1.0.0"
    connection = await raw_connect(client)
    await connection.send_head("PATCH", location, {
        **OCTETS, "Upload-Offset": "0", "Content-Length": "10", "Expect": "100-continue",
    })  # fmt: skip
    assert (await connection.read_head())[0] == 100
    await connection.send(b"0123456789")
    assert (await connection.response()).status == 204


async def test_of_two_create_only_uploads_finishing_at_once_one_wins(
    client: TestClient[Any, Any],
) -> None:
    bodies = [payload(6 * MiB, seed=s) for s in (11, 12)]
    locations = [await create(client, len(b), key="race.bin", create_only="1") for b in bodies]
    answers = await asyncio.gather(
        *(
            patch(client, location, 0, body)
            for location, body in zip(locations, bodies, strict=True)
        )
    )
    statuses = sorted(answer.status for answer in answers)
    assert statuses == [204, 412], [await a.text() for a in answers]
    winner = bodies[[a.status for a in answers].index(204)]
    assert await fetched(client, "race.bin") == winner
