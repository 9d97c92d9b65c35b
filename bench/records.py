"""What the SHA-256 record costs a cold GET's first byte.

A multipart upload's digest lives in a record object that vidproxy reads beside
the object's GET; an object carrying its digest in metadata (a client sent
X-Content-SHA256 up front) does not wait for that read. Both kinds are uploaded
through vidproxy once; every run restarts vidproxy on an empty cache and GETs
each pair back to back, alternating which goes first, and checks the bytes and
the header after the clock stops.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from . import client, downloads
from .data import Pattern
from .downloads import Timing, check, wait_cached
from .services import BUCKET, Env
from .units import MiB
from .uploads import CONTENT_TYPE, SEND_PIECE, VerifyError

RECORD_OBJECT = 16 * MiB  # two of vidproxy's default 8 MiB parts: multipart
PAIRS = 9  # cold GETs of each kind per run; the run's figure is their median


def record_key(n: int) -> str:
    return f"sha-record-{n}.bin"


def metadata_key(n: int) -> str:
    return f"sha-metadata-{n}.bin"


def upload_pairs(env: Env, pattern: Pattern) -> None:
    """Upload both kinds through vidproxy; HEAD each with boto3 so that no timed
    GET pays rclone's MD5 of a new file."""
    digest = pattern.sha256(RECORD_OBJECT)
    for n in range(PAIRS):
        for key, headers in (
            (record_key(n), CONTENT_TYPE),
            (metadata_key(n), {**CONTENT_TYPE, "X-Content-SHA256": digest}),
        ):
            pieces = pattern.pieces(0, RECORD_OBJECT, SEND_PIECE)
            reply = client.upload(env.direct.port, f"/videos/{key}", pieces, RECORD_OBJECT, headers)
            if reply.status != 201 or json.loads(reply.body)["sha256"] != digest:
                raise VerifyError(f"upload of {key} answered {reply.status}: {reply.body[:300]!r}")
            env.s3.head_object(Bucket=BUCKET, Key=key)


def cold_get(env: Env, pattern: Pattern, buf: memoryview, key: str) -> Callable[[], Timing]:
    """A first GET of ``key`` (a cache miss), checked after the clock stops; then
    its fill is let finish so that it competes with nothing that follows."""

    def go() -> Timing:
        timing = downloads.vidproxy_get(env.direct, key, buf, RECORD_OBJECT)
        check(buf, pattern, 0, RECORD_OBJECT, f"vidproxy cold GET of {key}")
        if timing.headers.get("x-cache") != "MISS":
            raise VerifyError(f"the GET of {key} was not a cache miss")
        if timing.headers.get("x-content-sha256") != pattern.sha256(RECORD_OBJECT):
            raise VerifyError(f"the GET of {key} did not report its SHA-256")
        wait_cached(env.direct, key)
        return timing

    return go
