"""``rclone serve s3`` for in-process tests: a second, independent S3 server
(the process is rigs.rclone's RcloneProcess, as in e2e).

One process per test session over a temp directory, with the same credentials
as moto gets (``AWS_ENV``); buckets are made with CreateBucket (a directory
made by hand is not seen for minutes). A test module gets the fixtures by
importing them::

    from rclone_rig import rclone_endpoint_fixture  # noqa: F401
    from rclone_rig import rclone_bucket_fixture  # noqa: F401  (a new bucket on it)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig
from conftest import AWS_ENV
from rigs.rclone import RcloneProcess


@pytest.fixture(name="rclone_endpoint", scope="session")
def rclone_endpoint_fixture(
    aws_env: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """``rclone serve s3`` on a free loopback port, stopped at the session's end."""
    root = tmp_path_factory.mktemp("rclone-data")
    key, secret = AWS_ENV["AWS_ACCESS_KEY_ID"], AWS_ENV["AWS_SECRET_ACCESS_KEY"]
    with RcloneProcess(root, root.parent / "rclone.log", key, secret).start() as rclone:
        yield rclone.url


def boto3_client(endpoint: str) -> Any:
    """A plain boto3 client on ``endpoint``, to look behind vidproxy's back."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        config=BotoConfig(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def new_bucket(s3: Any) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(name="rclone_bucket")
def rclone_bucket_fixture(rclone_endpoint: str) -> str:
    """A new bucket on the session's rclone."""
    return new_bucket(boto3_client(rclone_endpoint))
