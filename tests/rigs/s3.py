"""S3 as boto3 sees it: what a test checks vidproxy left in the bucket."""

from __future__ import annotations

import asyncio
from typing import Any


def pending_uploads(s3: Any, bucket: str) -> list[str]:
    """The keys of the bucket's unfinished multipart uploads (rclone answers
    NoSuchUpload for a bucket that never had one: none)."""
    try:
        listed = s3.list_multipart_uploads(Bucket=bucket)
    except s3.exceptions.NoSuchUpload:
        return []
    return [upload["Key"] for upload in listed.get("Uploads", [])]


async def unfinished_uploads(s3: Any, bucket: str) -> list[str]:
    """``pending_uploads`` from a thread, for async tests."""
    return await asyncio.to_thread(pending_uploads, s3, bucket)


def object_bytes(s3: Any, bucket: str, key: str) -> bytes | None:
    """The object's bytes, or None if there is none under ``key``."""
    try:
        return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except s3.exceptions.NoSuchKey:
        return None
