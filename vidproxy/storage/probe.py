"""Does the S3 backend enforce create-only writes? Asked once, of the backend itself.

A create-only write (``If-None-Match: *``) is create-only within one vidproxy
process whatever the backend does: the store serializes them per key. Across
processes (replicas) only the backend can refuse the second writer, and not every
backend does (``rclone serve s3`` ignores the condition). The probe writes an
object of its own under ``keys.RESERVED_PREFIX`` twice with the condition, once
by ``PutObject`` and once by ``CompleteMultipartUpload``, and sees whether the
second write of each is refused; then it removes what it made.

It cannot see a race: moto refuses a second Complete made after the first, yet
lets some of several concurrent ones through.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from ulid import ULID

from ..errors import PreconditionFailed, VidproxyError
from ..keys import RESERVED_PREFIX
from .s3api import S3API, WriteConditions

log = logging.getLogger(__name__)

ErrorMapper = Callable[[str], AbstractAsyncContextManager[None]]
PROBE_PREFIX = f"{RESERVED_PREFIX}probe/"
_CREATE_ONLY: WriteConditions = {"IfNoneMatch": "*"}


@dataclass(frozen=True)
class CreateOnlyProbe:
    put_refused: bool  # a second conditional PutObject was refused (412)
    complete_refused: bool  # so was a conditional CompleteMultipartUpload

    @property
    def enforced(self) -> bool:
        return self.put_refused and self.complete_refused


async def probe_create_only(client: S3API, bucket: str, errors: ErrorMapper) -> CreateOnlyProbe:
    """Write a probe object twice each way with ``If-None-Match: *``; raises the
    mapped error if the backend cannot be asked (the probe is then inconclusive)."""
    key = f"{PROBE_PREFIX}{ULID()}"
    try:
        await _put(client, bucket, key, errors)
        put_refused = await _refused(_put(client, bucket, key, errors))
        complete_refused = await _refused(_complete(client, bucket, key, errors))
    finally:
        with contextlib.suppress(VidproxyError):
            async with errors("DeleteObject"):
                await client.delete_object(Bucket=bucket, Key=key)
    return CreateOnlyProbe(put_refused, complete_refused)


async def _refused(write: Awaitable[None]) -> bool:
    try:
        await write
    except PreconditionFailed:
        return True
    return False


async def _put(client: S3API, bucket: str, key: str, errors: ErrorMapper) -> None:
    async with errors("PutObject"):
        await client.put_object(Bucket=bucket, Key=key, Body=b"probe", **_CREATE_ONLY)


async def _complete(client: S3API, bucket: str, key: str, errors: ErrorMapper) -> None:
    """A one-part multipart write of ``key`` (one part may be any size)."""
    async with errors("CreateMultipartUpload"):
        created = await client.create_multipart_upload(Bucket=bucket, Key=key)
    upload_id = created["UploadId"]
    try:
        async with errors("UploadPart"):
            part = await client.upload_part(
                Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"probe"
            )
        async with errors("CompleteMultipartUpload"):
            await client.complete_multipart_upload(
                Bucket=bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
                **_CREATE_ONLY,
            )
    finally:
        # A refused Complete leaves the upload (and its part) behind; a completed
        # one is gone already (NoSuchUpload).
        with contextlib.suppress(VidproxyError):
            async with errors("AbortMultipartUpload"):
                await client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)


def report(probe: CreateOnlyProbe) -> None:
    """One line for the operator: what a create-only write is worth here."""
    if probe.enforced:
        log.info("S3 refuses a second create-only write (If-None-Match: *): enforced")
        return
    ignored = [
        name
        for name, refused in (
            ("PutObject", probe.put_refused),
            ("CompleteMultipartUpload", probe.complete_refused),
        )
        if not refused
    ]
    log.warning(
        "S3 ignores If-None-Match: * on %s: create-only writes hold within this process "
        "only; replicas writing the same keys may both succeed",
        " and ".join(ignored),
    )
