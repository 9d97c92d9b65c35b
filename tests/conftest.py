"""Fixtures that start real servers: moto in server mode, and vidproxy itself.

Every server binds 127.0.0.1 on a free port and is stopped by the fixture
that started it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from aiohttp.test_utils import TestClient
from botocore.config import Config as BotoConfig

from vidproxy.app import create_app
from vidproxy.config import Config, load_config
from vidproxy.units import MiB

# Tests use the smallest part S3 allows, so multipart paths run on small bodies.
PART_SIZE = 5 * MiB
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 20.0, proc: subprocess.Popen[Any] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@pytest.fixture(scope="session", autouse=True)
def aws_env() -> Iterator[None]:
    """Credentials for the local S3 endpoints; never real ones."""
    saved = {k: os.environ.get(k) for k in AWS_ENV}
    os.environ.update(AWS_ENV)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def moto_endpoint(aws_env: None) -> Iterator[str]:
    """moto in server mode, as its own process on a free loopback port."""
    port = free_port()
    exe = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    proc = subprocess.Popen(
        [exe, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc=proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def s3(moto_endpoint: str) -> Any:
    """A plain boto3 client on the same endpoint, to inspect what vidproxy left in S3."""
    return boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        config=BotoConfig(retries={"max_attempts": 1}),
    )


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(params=["fs", "s3"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_config(tmp_path: Path, request: pytest.FixtureRequest) -> Callable[..., Config]:
    """Build a Config for ``backend`` ("fs" or "s3") with section overrides."""

    def make(backend: str, **sections: dict[str, Any]) -> Config:
        layers: dict[str, dict[str, Any]] = {
            "fs": {"dir": str(tmp_path / "data")},
            "cache": {"dir": str(tmp_path / "cache")},
            "s3": {"part_size": PART_SIZE, "upload_concurrency": 2, "max_attempts": 1},
        }
        if backend == "s3":
            layers["s3"].update(
                endpoint_url=request.getfixturevalue("moto_endpoint"),
                bucket=request.getfixturevalue("bucket"),
                addressing_style="path",
            )
        for section, values in sections.items():
            layers.setdefault(section, {}).update(values)
        return load_config(None, env={}, overrides=layers)

    return make


@pytest.fixture
async def start_vidproxy(
    aiohttp_client: Callable[..., Any],
) -> Callable[[Config], Any]:
    """Start vidproxy on a real loopback socket; returns an aiohttp TestClient."""

    async def start(config: Config) -> TestClient[Any, Any]:
        return await aiohttp_client(create_app(config))

    return start


@pytest.fixture
async def client(
    backend: str, make_config: Callable[..., Config], start_vidproxy: Callable[..., Any]
) -> AsyncIterator[TestClient[Any, Any]]:
    """vidproxy on each backend in turn (fs, then s3 against moto)."""
    yield await start_vidproxy(make_config(backend))
