"""Abort multipart uploads left behind by a crash or a lost connection.

S3 keeps the parts of an unfinished multipart upload (and bills for them)
until it is aborted. At start and then periodically, every upload in the
bucket initiated longer ago than ``s3.abort_stale_uploads_after`` is aborted;
no live upload through vidproxy lasts that long. A bucket lifecycle rule
``AbortIncompleteMultipartUpload`` is the backstop outside vidproxy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

from ..errors import NotFound, UpstreamError, UpstreamUnavailable

log = logging.getLogger(__name__)

ErrorMapper = Callable[[str], AbstractAsyncContextManager[None]]
# The S3 upload ids a sweep must leave alone: those of live tus uploads, which
# may rightly be older than the age limit (they expire by their own rule).
KeepIds = Callable[[], Awaitable[set[str]]]


async def _nothing_to_keep() -> set[str]:
    return set()


# Sweep this often, but never less often than the age limit allows.
MAX_SWEEP_INTERVAL = 3600.0


async def abort_stale_uploads(
    client: Any,
    bucket: str,
    older_than: float,
    errors: ErrorMapper,
    keep: KeepIds = _nothing_to_keep,
) -> int:
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than)
    aborted = 0
    kept: set[str] | None = None
    async for upload in _list_uploads(client, bucket, errors):
        if upload["Initiated"] > cutoff:
            continue
        if kept is None:
            kept = await keep()
        if upload["UploadId"] in kept:
            continue
        async with errors("AbortMultipartUpload"):
            await client.abort_multipart_upload(
                Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
        aborted += 1
    if aborted:
        log.info("aborted %d stale multipart upload(s)", aborted)
    return aborted


async def _list_uploads(
    client: Any, bucket: str, errors: ErrorMapper
) -> AsyncIterator[dict[str, Any]]:
    params: dict[str, Any] = {"Bucket": bucket}
    while True:
        try:
            async with errors("ListMultipartUploads"):
                page = await client.list_multipart_uploads(**params)
        except NotFound:
            return  # rclone answers NoSuchUpload for a bucket that never had one
        for upload in page.get("Uploads", []):
            yield upload
        if not page.get("IsTruncated"):
            return
        params["KeyMarker"] = page.get("NextKeyMarker", "")
        params["UploadIdMarker"] = page.get("NextUploadIdMarker", "")


async def sweep_forever(
    client: Any,
    bucket: str,
    older_than: float,
    errors: ErrorMapper,
    keep: KeepIds = _nothing_to_keep,
) -> None:
    interval = min(max(older_than / 4, 1.0), MAX_SWEEP_INTERVAL)
    while True:
        try:
            await abort_stale_uploads(client, bucket, older_than, errors, keep)
        except (UpstreamError, UpstreamUnavailable) as exc:
            log.warning("stale upload sweep failed: %s", exc.message)
        await asyncio.sleep(interval)
