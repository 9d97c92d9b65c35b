"""How big and how often: the full run of issue 6, and the CI smoke run."""

from __future__ import annotations

from dataclasses import dataclass

from .services import PART_SIZE, UPLOAD_CONCURRENCY
from .units import GiB, MiB

CLIENTS = 16  # concurrent clients in the concurrency figures and for wrk
RSS_ALLOWANCE = 80 * MiB  # the "+ 80 MiB" of the peak-RSS target
CONCURRENT_RSS_LIMIT = 800 * MiB


@dataclass(frozen=True)
class Sizes:
    name: str
    throughput: int  # the uploads and downloads whose speed is measured
    concurrency: int  # each of the 16 concurrent uploads and GETs
    memory_small: int
    memory_big: int
    runs: int
    wrk_seconds: int
    enforce: bool  # whether a missed target fails the run and gets a profile

    @property
    def rss_limit(self) -> int:
        return PART_SIZE * (UPLOAD_CONCURRENCY + 1) + RSS_ALLOWANCE

    @staticmethod
    def label(size: int) -> str:
        if size >= GiB and size % GiB == 0:
            return f"{size // GiB} GiB"
        return f"{size / MiB:g} MiB"


FULL = Sizes(
    name="full",
    throughput=1 * GiB,
    concurrency=256 * MiB,
    memory_small=256 * MiB,
    memory_big=4 * GiB,
    runs=3,
    wrk_seconds=10,
    enforce=True,
)

SMOKE = Sizes(
    name="smoke",
    throughput=64 * MiB,
    concurrency=16 * MiB,
    memory_small=16 * MiB,
    memory_big=64 * MiB,
    runs=1,
    wrk_seconds=2,
    enforce=False,
)
