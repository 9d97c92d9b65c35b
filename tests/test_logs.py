"""What reaches the log: no credential at any level.

A real ``vidproxy serve`` at ``log_level = "debug"`` talks to moto through the
fault rig's proxy, which records every S3 request as signed: the test knows the
AWS credentials it gave the process, and collects the SigV4 signatures and
Authorization headers that were really sent, then greps the whole log for them.
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import NO_STALE_UPLOAD_SWEEP_ENV, PART_SIZE
from fault_rig import (
    S3Faults,
    VidproxyProcess,
    payload,
    running,
    s3_faults_fixture,  # noqa: F401 - the fixture this module uses
)

from vidproxy.logs import JsonFormatter, RedactCredentials

AWS_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIAVIDPROXYLOGTEST7",
    "AWS_SECRET_ACCESS_KEY": "vidproxy-log-test-secret-9f3c81",
    "AWS_SESSION_TOKEN": "vidproxy-log-test-session-4b17e2",
}
WRITE_TOKEN = "wtok-log-3c9a01f7"
READ_TOKEN = "rtok-log-8e24b6d0"
SIGNING_KEY = "skey-log-51f0c9e2aa"
WRITER = {"Authorization": f"Bearer {WRITE_TOKEN}"}
READER = {"Authorization": f"Bearer {READ_TOKEN}"}
SMALL = payload(20_000, 1)
LARGE = payload(PART_SIZE + 1000, 2)  # two parts: the multipart calls are signed too
_SIGNATURE = re.compile(r"Signature=([0-9a-f]{64})")


def sent_credentials(faults: S3Faults) -> list[str]:
    """The Authorization headers, signatures and session tokens S3 received."""
    seen: list[str] = []
    for request in faults.seen:
        authorization = request.headers.get("Authorization", "")
        seen += [authorization, *_SIGNATURE.findall(authorization)]
        seen.append(request.headers.get("X-Amz-Security-Token", ""))
    return [value for value in seen if value]


async def exercise(http: aiohttp.ClientSession) -> list[str]:
    """Uploads, downloads (a cache miss, a hit, a range), listing, signed URLs,
    a miss and a delete; returns the signed URLs' signatures."""
    assert (await http.put("/videos/small.mp4", data=SMALL, headers=WRITER)).status == 201
    assert (await http.put("/videos/large.mp4", data=LARGE, headers=WRITER)).status == 201
    for _ in range(2):
        async with http.get("/videos/large.mp4", headers=READER) as response:
            assert (response.status, await response.read()) == (200, LARGE)
    ranged = {**READER, "Range": "bytes=10-99"}
    async with http.get("/videos/small.mp4", headers=ranged) as response:
        assert (response.status, await response.read()) == (206, SMALL[10:100])
    assert (await http.get("/videos", headers=READER)).status == 200
    assert (await http.get("/videos/missing.mp4", headers=READER)).status == 404
    sigs = []
    for method in ("GET", "PUT"):
        answer = await http.post(
            "/sign", json={"key": "signed.mp4", "method": method}, headers=WRITER
        )
        url = (await answer.json())["url"]
        sigs.append(url.rsplit("sig=", 1)[1])
        if method == "PUT":
            assert (await http.put(url, data=SMALL)).status == 201
        else:
            signed_get = url
    async with http.get(signed_get) as response:
        assert (response.status, await response.read()) == (200, SMALL)
    assert (await http.delete("/videos/small.mp4", headers=WRITER)).status == 204
    return sigs


async def test_debug_logs_carry_no_credential_signature_or_token(
    tmp_path: Path, s3_faults: S3Faults, s3: Any, bucket: str
) -> None:
    env = {
        **AWS_CREDENTIALS,
        **NO_STALE_UPLOAD_SWEEP_ENV,
        "VIDPROXY_SERVER_LOG_LEVEL": "debug",
        "VIDPROXY_S3_BUCKET": bucket,
        "VIDPROXY_S3_ENDPOINT_URL": s3_faults.url,
        "VIDPROXY_S3_ADDRESSING_STYLE": "path",
        "VIDPROXY_S3_PART_SIZE": str(PART_SIZE),
        "VIDPROXY_CACHE_DIR": str(tmp_path / "cache"),
        "VIDPROXY_AUTH_WRITE_TOKENS": WRITE_TOKEN,
        "VIDPROXY_AUTH_READ_TOKENS": READ_TOKEN,
        "VIDPROXY_AUTH_SIGNING_KEY": SIGNING_KEY,
    }
    process = VidproxyProcess(tmp_path, env)
    async with running(process), aiohttp.ClientSession(process.url) as http:
        url_sigs = await exercise(http)
    log = process.log()
    assert " DEBUG " in log  # the level was in force
    assert "large.mp4" in log  # requests were logged
    secrets = [*AWS_CREDENTIALS.values(), WRITE_TOKEN, READ_TOKEN, SIGNING_KEY, *url_sigs]
    sent = sent_credentials(s3_faults)
    assert len(sent) >= 20, sent  # what S3 got, signatures and session token included
    for secret in [*secrets, *sent]:
        assert secret not in log, f"{secret!r} is in the log"
    assert not re.search(r"Credential=(?!REDACTED)|Signature[=:]\s*[0-9a-f]", log)


# ---- the filter on its own -------------------------------------------------------------


def rendered(record: logging.LogRecord, formatter: logging.Formatter) -> str:
    RedactCredentials([WRITE_TOKEN]).filter(record)
    return formatter.format(record)


@pytest.mark.parametrize("formatter", [logging.Formatter(), JsonFormatter()])
def test_a_traceback_is_redacted_in_text_and_json(formatter: logging.Formatter) -> None:
    try:
        raise RuntimeError(f"Authorization: Bearer {WRITE_TOKEN}")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, "f", 1, "failed: %s", (WRITE_TOKEN,), None)
        record.exc_info = sys.exc_info()
    text = rendered(record, formatter)
    assert WRITE_TOKEN not in text
    assert "RuntimeError: Authorization: Bearer REDACTED" in text
    assert "failed: REDACTED" in text


@pytest.mark.parametrize(
    ("logged", "shown"),
    [
        (
            "'Authorization': b'AWS4-HMAC-SHA256 "
            "Credential=AKIAX/20261202/us-east-1/s3/aws4_request, "
            "SignedHeaders=host, Signature=" + "ab" * 32 + "'",
            "'Authorization': b'AWS4-HMAC-SHA256 Credential=REDACTED, SignedHeaders=host, "
            "Signature=REDACTED'",
        ),
        ("Signature:\n" + "0f" * 32, "Signature:\nREDACTED"),
        ("'X-Amz-Security-Token': b'FQoGZXIvYXdz'", "'X-Amz-Security-Token': b'REDACTED'"),
        ("GET /videos/a?expires=1&sig=" + "cd" * 32, "GET /videos/a?expires=1&sig=REDACTED"),
        ("Authorization: Basic d3RvazpzZWNyZXQ=", "Authorization: Basic REDACTED"),
        # What looks like a credential only by being hex stays: content digests.
        ("sha256 " + "ab" * 32, "sha256 " + "ab" * 32),
    ],
)
def test_credential_shapes_are_redacted(logged: str, shown: str) -> None:
    assert RedactCredentials([]).redact(logged) == shown
