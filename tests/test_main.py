"""``vidproxy serve`` as a process: what start-up says about the backend it uses;
``--version``, ``--help`` and ``sign``'s options of the command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from conftest import NO_STALE_UPLOAD_SWEEP_ENV, free_port
from fault_rig import (
    S3Faults,
    VidproxyProcess,
    running,
    s3_faults_fixture,  # noqa: F401
)

from vidproxy.auth import Authorizer

Wait = Callable[..., Awaitable[None]]
NO_AWS_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "",
    "AWS_SECRET_ACCESS_KEY": "",
    "AWS_SESSION_TOKEN": "",
    # Nothing else in botocore's chain either, and no instance-metadata lookup
    # (it would leave loopback).
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/credentials",
    "AWS_CONFIG_FILE": "/nonexistent/config",
}


def readyz(process: VidproxyProcess) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(process.url + "/readyz", timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


# A start-up check that waits for a silent backend would wait this long.
NO_DEADLINE_ENV = {"VIDPROXY_S3_REQUEST_DEADLINE": "600"}


def s3_env(endpoint: str, bucket: str, cache_dir: Path | None = None) -> dict[str, str]:
    cache = {"VIDPROXY_CACHE_DIR": str(cache_dir)} if cache_dir is not None else {}
    return {
        **cache,
        **NO_STALE_UPLOAD_SWEEP_ENV,
        "VIDPROXY_S3_BUCKET": bucket,
        "VIDPROXY_S3_ENDPOINT_URL": endpoint,
        "VIDPROXY_S3_ADDRESSING_STYLE": "path",
        "VIDPROXY_S3_REGION": "eu-west-3",
        "VIDPROXY_S3_MAX_ATTEMPTS": "1",
    }


def line_with(log: str, text: str) -> str:
    return next(line for line in log.splitlines() if text in line)


async def test_start_up_names_the_s3_backend_and_says_it_is_ready(
    tmp_path: Path, moto_endpoint: str, bucket: str, wait_until: Wait
) -> None:
    env = s3_env(moto_endpoint, bucket, tmp_path / "cache")
    where = f"S3 bucket '{bucket}' at {moto_endpoint}, region eu-west-3, path addressing"
    async with running(VidproxyProcess(tmp_path, env)) as process:

        async def checked() -> bool:
            return "storage ready" in process.log()

        await wait_until(checked, "the start-up check's line")
    log = process.log()
    assert f"INFO vidproxy: vidproxy storing in {where}\n" in log
    assert f" INFO vidproxy.web.handlers.health: storage ready ({where})\n" in log


async def test_the_port_opens_once_the_start_up_check_is_done(
    tmp_path: Path, moto_endpoint: str, bucket: str
) -> None:
    # Its S3 calls would otherwise run beside the first request and hold it up.
    env = s3_env(moto_endpoint, bucket, tmp_path / "cache")
    async with running(VidproxyProcess(tmp_path, env), probe="") as process:
        log = process.log()
    assert "vidproxy.web.handlers.health: storage ready" in log


async def test_a_backend_that_does_not_answer_holds_the_start_for_two_seconds_at_most(
    tmp_path: Path, s3_faults: S3Faults, bucket: str
) -> None:
    s3_faults.stall = lambda request: request.method == "HEAD"  # the check's HeadBucket
    env = {**s3_env(s3_faults.url, bucket, tmp_path / "cache"), **NO_DEADLINE_ENV}
    # Started within 30 s, where waiting for the check would take 600.
    async with running(VidproxyProcess(tmp_path, env), probe="/healthz", within=30) as process:
        log = process.log()
    assert s3_faults.stalled, "the start-up check's HeadBucket never reached S3"
    assert "storage ready" not in log and "storage not ready" not in log


async def test_a_stop_signal_while_the_start_waits_for_the_check_ends_it_cleanly(
    tmp_path: Path, s3_faults: S3Faults, bucket: str, wait_until: Wait
) -> None:
    s3_faults.stall = lambda request: request.method == "HEAD"  # the check's HeadBucket
    env = {**s3_env(s3_faults.url, bucket, tmp_path / "cache"), **NO_DEADLINE_ENV}
    with VidproxyProcess(tmp_path, env) as process:
        process.launch()

        async def waiting() -> bool:
            return bool(s3_faults.stalled)

        await wait_until(waiting, "the start-up check's HeadBucket", within=20)
        process.signal(signal.SIGTERM)
        code = await process.await_exit()
    assert code == 0, process.tail()
    assert "vidproxy.web.server: stopped" in process.log()


async def test_start_up_names_the_fs_directory(tmp_path: Path, wait_until: Wait) -> None:
    env = {"VIDPROXY_FS_DIR": "data"}
    async with running(VidproxyProcess(tmp_path, env)) as process:

        async def checked() -> bool:
            return "storage ready" in process.log()

        await wait_until(checked, "the start-up check's line")
    assert f"storage ready (the fs directory {tmp_path / 'data'})" in process.log()


@pytest.mark.parametrize(
    "cause",
    [
        "the storage backend is unreachable (HeadBucket)",
        "no usable S3 credentials were found (HeadBucket)",
        "the configured bucket is missing or not accessible",
    ],
)
async def test_start_up_warns_in_one_line_with_the_cause_and_readyz_says_it(
    tmp_path: Path, moto_endpoint: str, bucket: str, wait_until: Wait, cause: str
) -> None:
    endpoint, name, env = moto_endpoint, bucket, {}
    if "unreachable" in cause:
        endpoint = f"http://127.0.0.1:{free_port()}"
    elif "credentials" in cause:
        env = NO_AWS_CREDENTIALS
    else:
        name = "no-such-bucket"
    env = {**env, **s3_env(endpoint, name, tmp_path / "cache")}
    process = VidproxyProcess(tmp_path, env)
    # Not fatal: the process serves (a stack may start S3 after it) and says why not ready.
    async with running(process, probe="/healthz"):

        async def warned() -> bool:
            return "storage not ready" in process.log()

        await wait_until(warned, "the start-up warning", within=20)
        status, body = readyz(process)
    warning = line_with(process.log(), "storage not ready")
    assert " WARNING " in warning
    assert f"S3 bucket '{name}' at {endpoint}, region eu-west-3, path addressing" in warning
    assert f"): {cause}; serving anyway" in warning
    assert (status, body) == (503, {"error": "upstream_unavailable", "message": cause})


def request(process: VidproxyProcess, method: str, path: str, body: bytes | None = None) -> Any:
    req = urllib.request.Request(process.url + path, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def test_without_credentials_clients_are_told_so_not_that_s3_is_unreachable(
    tmp_path: Path, moto_endpoint: str, bucket: str
) -> None:
    # The report: 503 "the storage backend is unreachable (PutObject)", while only
    # the log said NoCredentialsError.
    env = {**NO_AWS_CREDENTIALS, **s3_env(moto_endpoint, bucket)}
    env["VIDPROXY_CACHE_DIR"] = str(tmp_path / "cache")
    async with running(VidproxyProcess(tmp_path, env), probe="/healthz") as process:
        answers = [
            request(process, "PUT", "/videos/clip.mp4", b"small body"),
            request(process, "GET", "/videos/clip.mp4"),
            request(process, "GET", "/videos"),
        ]
    operations = ["PutObject", "GetObject", "ListObjectsV2"]
    assert answers == [
        (
            503,
            {
                "error": "upstream_unavailable",
                "message": f"no usable S3 credentials were found ({op})",
            },
        )
        for op in operations
    ]
    assert "S3 PutObject failed: NoCredentialsError" in process.log()


# ---- --version and --help -------------------------------------------------------------


def vidproxy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vidproxy", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_version_is_the_packages() -> None:
    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    version = tomllib.loads(pyproject.read_text())["project"]["version"]
    result = vidproxy("--version")
    assert (result.returncode, result.stdout, result.stderr) == (0, f"vidproxy {version}\n", "")


def test_help_is_plain_text_with_the_exit_codes() -> None:
    result = vidproxy("--help")
    assert result.returncode == 0
    assert "``" not in result.stdout and ":class:" not in result.stdout
    assert "vidproxy serve" in result.stdout
    assert "exit codes:" in result.stdout
    for code in ("0", "1", "2", "3", "4", "130"):
        assert f" {code} " in result.stdout


def test_a_secret_file_that_is_not_utf8_stops_serve_with_one_line(tmp_path: Path) -> None:
    secret = tmp_path / "write.tokens"
    secret.write_bytes("t\u00f6ken\n".encode("latin-1"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDPROXY_")}
    env["VIDPROXY_AUTH_WRITE_TOKENS_FILE"] = str(secret)
    env["VIDPROXY_FS_DIR"] = str(tmp_path / "data")
    result = subprocess.run(
        [sys.executable, "-m", "vidproxy", "serve", "--port", "0"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"vidproxy: config error: auth.write_tokens_file: {secret} is not UTF-8 text (byte 1)\n"
    )


def test_sign_explains_method_and_a_head_url_is_the_get_url(tmp_path: Path) -> None:
    shown = vidproxy("sign", "--help")
    assert shown.returncode == 0
    text = " ".join(shown.stdout.split())
    assert "GET (download; the URL answers HEAD too), HEAD (the same URL as GET)" in text
    assert "PUT (upload) or DELETE (default: GET)" in text
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDPROXY_")}
    env["VIDPROXY_AUTH_SIGNING_KEY"] = "a-signing-key"
    head = subprocess.run(
        [sys.executable, "-m", "vidproxy", "sign", "clip.mp4", "--method", "head"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    query = dict(parse_qsl(urlsplit(head).query))
    signer = Authorizer((), (), b"a-signing-key")
    assert query["sig"] == signer.signature("GET", "clip.mp4", int(query["expires"]))


def test_sign_refuses_a_base_url_that_names_the_collection(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDPROXY_")}
    env["VIDPROXY_AUTH_SIGNING_KEY"] = "a-signing-key"
    result = subprocess.run(
        [sys.executable, "-m", "vidproxy", "sign", "k.mp4", "--url", "https://h/vp/videos"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.strip().endswith("use https://h/vp")
