"""/metrics over HTTP: Prometheus text that moves with the traffic."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

from vidproxy.config import Config


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 if absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = rf"^{re.escape(name)}(?:\{{(?P<labels>.*)\}})? (?P<value>\S+)$"
    for match in re.finditer(pattern, text, re.MULTILINE):
        got = ",".join(sorted((match.group("labels") or "").split(","))) if labels else ""
        if got == want or (not labels and match.group("labels") is None):
            return float(match.group("value"))
    return 0.0


async def metrics(client: Any) -> str:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return str(await response.text())


async def test_requests_are_counted_by_route_method_and_status(client: Any) -> None:
    assert (await client.put("/videos/m.bin", data=b"abc")).status == 201
    assert (await client.get("/videos/missing")).status == 404
    text = await metrics(client)
    route = "/videos/{key}"
    assert sample(text, "vidproxy_requests_total", route=route, method="PUT", status="201") == 1
    assert sample(text, "vidproxy_requests_total", route=route, method="GET", status="404") == 1
    assert sample(text, "vidproxy_received_bytes_total") == 3


async def test_s3_requests_parts_and_cache_results_are_counted(
    make_config: Callable[..., Config], start_vidproxy: Callable[..., Any]
) -> None:
    client = await start_vidproxy(make_config("s3"))
    body = os.urandom(11 * 1024 * 1024)
    assert (await client.put("/videos/big.bin", data=body)).status == 201
    response = await client.get("/videos/big.bin")
    assert await response.read() == body
    text = await metrics(client)
    assert sample(text, "vidproxy_multipart_parts_total") == 3
    assert sample(text, "vidproxy_s3_requests_total", operation="UploadPart") == 3
    assert sample(text, "vidproxy_s3_requests_total", operation="CompleteMultipartUpload") == 1
    assert sample(text, "vidproxy_cache_answers_total", result="miss") == 1
    sent_before = sample(text, "vidproxy_sent_bytes_total")
    response = await client.get("/videos/big.bin", headers={"Range": "bytes=0-99"})
    assert len(await response.read()) == 100
    text = await metrics(client)
    assert sample(text, "vidproxy_sent_bytes_total") - sent_before == 100
    assert (await client.get("/videos/nope")).status == 404
    text = await metrics(client)
    assert sample(text, "vidproxy_s3_errors_total", operation="GetObject") == 1
