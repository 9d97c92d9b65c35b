"""Random 1 MiB Ranges with wrk (16 connections), plus a verified sample of the same."""

from __future__ import annotations

import os
import random
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import client
from .data import Pattern
from .procs import find_tool
from .units import KiB, MiB
from .uploads import VerifyError

SPAN = 1 * MiB
CONNECTIONS = 16
THREADS = 2  # one per core of the bench machine
SCRIPT = Path(__file__).with_name("ranges.lua")
SAMPLE_RANGES = 8  # verified with the bench's own client after each wrk run
MAX_HEAD = 4 * KiB  # response head bytes per answer that wrk also counts (vidproxy: ~1.2 KiB)
_SUMMARY = re.compile(r"^BENCH (.*)$", re.MULTILINE)


@dataclass
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


def run_wrk(port: int, path: str, size: int, seconds: int) -> WrkResult:
    argv = [find_tool("wrk"), f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{seconds}s"]
    argv += ["-s", str(SCRIPT), f"http://127.0.0.1:{port}{path}"]
    env = {**os.environ, "BENCH_SIZE": str(size), "BENCH_SPAN": str(SPAN)}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 60)
    match = _SUMMARY.search(done.stdout)
    if done.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}{done.stderr}")
    fields = {k: int(v) for k, v in (item.split("=") for item in match.group(1).split())}
    errors = sum(fields[k] for k in ("connect", "read", "write", "status", "timeout"))
    requests = fields["requests"]
    per_request = fields["bytes"] / max(requests, 1)
    if errors or not SPAN <= per_request <= SPAN + MAX_HEAD:
        raise VerifyError(f"wrk on :{port}: {errors} errors, {per_request:.0f} bytes per answer")
    return WrkResult(
        requests, fields["duration_us"] / 1e6, fields["p50_us"] / 1e3, fields["p99_us"] / 1e3
    )


def verify_sample(port: int, path: str, pattern: Pattern, size: int, seed: int) -> None:
    """A few random 1 MiB ranges, byte for byte (wrk itself cannot look at bodies)."""
    rng = random.Random(seed)
    buf = memoryview(bytearray(SPAN))
    for _ in range(SAMPLE_RANGES):
        first = rng.randrange(0, size - SPAN + 1)
        reply = client.get(port, path, {"Range": f"bytes={first}-{first + SPAN - 1}"}, into=buf)
        if reply.status != 206 or buf != pattern.slice(first, first + SPAN):
            raise VerifyError(f"range at {first} from :{port} differs ({reply.status})")
