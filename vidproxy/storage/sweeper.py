"""Abort multipart uploads left behind by a crash or a lost connection.

S3 keeps the parts of an unfinished multipart upload (and bills for them)
until it is aborted. At start and then periodically, every upload in the
bucket that has shown no activity for ``s3.abort_stale_uploads_after`` is
aborted. Activity is judged by what S3 reports: the newest part's
``LastModified`` (ListParts), or ``Initiated`` for an upload with no part yet.
An upload this process is still receiving is never touched (``live``: the
store's own upload ids); one with no part is aborted only when the previous
sweep also found it stale and empty, so a backend whose ``Initiated`` is wrong
(moto reports 2010) or whose clock runs ahead cannot cost another replica an
upload between its start and its first part.

The sweep never ends by itself: an abort that lost a race with another
replica's (``NoSuchUpload``), an error of S3's, or anything unforeseen is
logged, and the next sweep runs on time. A bucket lifecycle rule
``AbortIncompleteMultipartUpload`` is the backstop outside vidproxy.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..errors import UploadAborted, VidproxyError
from .s3api import S3API

if TYPE_CHECKING:
    from types_aiobotocore_s3.type_defs import MultipartUploadTypeDef

log = logging.getLogger(__name__)

ErrorMapper = Callable[[str], AbstractAsyncContextManager[None]]
# The S3 upload ids a sweep must leave alone besides this process's own: those of
# live tus uploads (any replica's), idle between PATCHes for as long as their
# own expiry allows.
KeepIds = Callable[[], Awaitable[set[str]]]


async def _nothing_to_keep() -> set[str]:
    return set()


# Sweep this often, but never less often than the age limit allows.
MAX_SWEEP_INTERVAL = 3600.0
MIN_SWEEP_INTERVAL = 1.0


@dataclass
class SweepState:
    """What a sweeper remembers from one sweep to the next."""

    # Uploads the last sweep found stale with no part: aborted if still so.
    stale_empty: set[str] = field(default_factory=set)


async def abort_stale_uploads(
    client: S3API,
    bucket: str,
    older_than: float,
    errors: ErrorMapper,
    *,
    live: Collection[str] = (),
    state: SweepState | None = None,
    keep: KeepIds = _nothing_to_keep,
) -> int:
    """One sweep: abort the uploads idle for ``older_than`` seconds; returns how many."""
    state = state if state is not None else SweepState()
    cutoff = datetime.now(UTC) - timedelta(seconds=older_than)
    stale_empty: set[str] = set()
    aborted = 0
    kept: set[str] | None = None
    async for upload in _list_uploads(client, bucket, errors):
        upload_id = str(upload["UploadId"])
        if upload_id in live or upload["Initiated"] > cutoff:
            continue
        if kept is None:
            kept = await keep()
        if upload_id in kept:
            continue
        try:
            if not await _is_stale(client, bucket, upload, cutoff, state, stale_empty, errors):
                continue
            aborted += await _abort(client, bucket, upload, errors)
        except VidproxyError as exc:
            # One upload S3 will not let us look at or abort must not spare the rest.
            log.warning(
                "stale upload sweep skipped an upload of %r: %s", upload["Key"], exc.message
            )
    state.stale_empty = stale_empty
    if aborted:
        log.info("aborted %d stale multipart upload(s)", aborted)
    return aborted


async def _is_stale(
    client: S3API,
    bucket: str,
    upload: MultipartUploadTypeDef,
    cutoff: datetime,
    state: SweepState,
    stale_empty: set[str],
    errors: ErrorMapper,
) -> bool:
    try:
        newest = await _newest_part(client, bucket, upload, cutoff, errors)
    except UploadAborted:
        return False  # completed or aborted since the listing: nothing to do
    if newest is not None:
        return newest <= cutoff
    upload_id = str(upload["UploadId"])
    stale_empty.add(upload_id)
    return upload_id in state.stale_empty


async def _newest_part(
    client: S3API,
    bucket: str,
    upload: MultipartUploadTypeDef,
    cutoff: datetime,
    errors: ErrorMapper,
) -> datetime | None:
    """The newest part's ``LastModified``, or None without parts. Stops at the first
    part newer than ``cutoff``: that is enough to keep the upload."""
    params: dict[str, Any] = {
        "Bucket": bucket,
        "Key": upload["Key"],
        "UploadId": upload["UploadId"],
    }
    newest: datetime | None = None
    while True:
        async with errors("ListParts"):
            page = await client.list_parts(**params)
        for part in page.get("Parts", []):
            modified: datetime = part["LastModified"]
            newest = modified if newest is None else max(newest, modified)
        if (newest is not None and newest > cutoff) or not page.get("IsTruncated"):
            return newest
        params["PartNumberMarker"] = page["NextPartNumberMarker"]


async def _abort(
    client: S3API, bucket: str, upload: MultipartUploadTypeDef, errors: ErrorMapper
) -> int:
    try:
        async with errors("AbortMultipartUpload"):
            await client.abort_multipart_upload(
                Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"]
            )
    except UploadAborted:
        return 0  # another replica's sweep got there first
    return 1


async def _list_uploads(
    client: S3API, bucket: str, errors: ErrorMapper
) -> AsyncIterator[MultipartUploadTypeDef]:
    params: dict[str, Any] = {"Bucket": bucket}
    while True:
        try:
            async with errors("ListMultipartUploads"):
                page = await client.list_multipart_uploads(**params)
        except UploadAborted:
            return  # rclone answers NoSuchUpload for a bucket that never had one
        for upload in page.get("Uploads", []):
            yield upload
        if not page.get("IsTruncated"):
            return
        params["KeyMarker"] = page.get("NextKeyMarker", "")
        params["UploadIdMarker"] = page.get("NextUploadIdMarker", "")


def sweep_interval(older_than: float) -> float:
    return min(max(older_than / 4, MIN_SWEEP_INTERVAL), MAX_SWEEP_INTERVAL)


async def sweep_forever(
    client: S3API,
    bucket: str,
    older_than: float,
    errors: ErrorMapper,
    live: Collection[str] = (),
    keep: KeepIds = _nothing_to_keep,
) -> None:
    """Sweep now and every ``sweep_interval``; only cancellation ends it."""
    interval = sweep_interval(older_than)
    state = SweepState()
    await repeat_forever(
        lambda: abort_stale_uploads(
            client, bucket, older_than, errors, live=live, state=state, keep=keep
        ),
        interval,
        "stale upload sweep",
    )


async def repeat_forever(
    sweep: Callable[[], Awaitable[object]], interval: float, what: str
) -> None:
    """Run ``sweep`` now and every ``interval`` seconds; only cancellation ends
    it. A failed sweep is logged (a traceback where it is a bug) and the next
    one runs on time: a sweeper task that died would never sweep again."""
    while True:
        try:
            await sweep()
        except VidproxyError as exc:
            log.warning("%s failed: %s; next in %g s", what, exc.message, interval)
        except Exception:
            log.exception("%s failed; next in %g s", what, interval)
        await asyncio.sleep(interval)
