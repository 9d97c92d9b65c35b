"""The figures: what is measured, against what, and the target its ratio must meet.

Every figure holds one vidproxy value and one baseline value per run, taken
back to back in the same run; ratio = vidproxy / baseline per run, and the
verdict is the median ratio against the target.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Target:
    op: str  # ">=", "<=", "<", "=="
    ratio: float
    text: str
    # "<= 1.5x, or +10 ms": also met when vidproxy is at most this much above (same unit).
    or_within: float | None = None

    def met(self, ratio: float, difference: float) -> bool:
        if self.or_within is not None and difference <= self.or_within:
            return True
        return {
            ">=": ratio >= self.ratio,
            "<=": ratio <= self.ratio,
            "<": ratio < self.ratio,
            "==": ratio == self.ratio,
        }[self.op]


@dataclass
class Figure:
    id: str
    title: str
    unit: str
    baseline: str
    target: Target
    vid: list[float] = field(default_factory=list)
    base: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # CPU seconds per GiB (per 1,000 requests for wrk), user + system from /proc:
    # vidproxy's process and its baseline's (None where it has none), one per run.
    cpu_vid: list[float] = field(default_factory=list)
    cpu_base: list[float] = field(default_factory=list)
    # Which floor (``Run.floors``) vidproxy's CPU figure is judged against, and how.
    floor: str | None = None
    cpu_target: str = ""

    def add_cpu(self, vid: float, base: float | None) -> None:
        self.cpu_vid.append(vid)
        if base is not None:
            self.cpu_base.append(base)

    def add(self, vid: float, base: float) -> None:
        self.vid.append(vid)
        self.base.append(base)

    @property
    def ratios(self) -> list[float]:
        return [v / b if b else float("inf") for v, b in zip(self.vid, self.base, strict=True)]

    @property
    def differences(self) -> list[float]:
        return [v - b for v, b in zip(self.vid, self.base, strict=True)]

    def verdict(self) -> bool | None:
        if not self.vid:
            return None
        return self.target.met(median(self.ratios), median(self.differences))

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "unit": self.unit,
            "baseline": self.baseline,
            "target": {
                "op": self.target.op,
                "ratio": self.target.ratio,
                "or_within": self.target.or_within,
                "text": self.target.text,
            },
            "vidproxy": summary(self.vid),
            "baseline_values": summary(self.base),
            "ratio": summary(self.ratios),
            "met": self.verdict(),
            "notes": self.notes,
            "cpu_seconds_per_gib": {
                "vidproxy": summary(self.cpu_vid),
                "baseline": summary(self.cpu_base),
                "floor": self.floor,
                "target": self.cpu_target,
            },
        }


def median(values: list[float]) -> float:
    return statistics.median(values)


def summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"runs": [], "median": None, "min": None, "max": None}
    return {"runs": values, "median": median(values), "min": min(values), "max": max(values)}


# A figure of CPU alone (its row is in the CPU table only): no ratio to judge.
CPU_ONLY = Target("<=", 1.0, "-")


# A tus upload cut at 900 MiB of 1 GiB may resend at most 130 MiB (issue 13):
# the 124 MiB after the cut and 6 MiB more. Other sizes cut at the same share.
RESUME_CUT_SHARE = 900 / 1024
RESUME_ALLOWANCE = 6 * 1024 * 1024


def resume_cut(size: int) -> int:
    return int(size * RESUME_CUT_SHARE)


def resume_limit_bytes(size: int) -> int:
    return size - resume_cut(size) + RESUME_ALLOWANCE


def catalogue(sizes: Any) -> dict[str, Figure]:
    """The figures of issue 6 and the cache issue, in table order."""
    big, conc = sizes.label(sizes.throughput), sizes.label(sizes.concurrency)
    huge = sizes.label(sizes.memory_big)
    limit = sizes.label(sizes.rss_limit)
    cut = sizes.label(resume_cut(sizes.throughput))
    resume_limit = sizes.label(resume_limit_bytes(sizes.throughput))
    figures = [
        Figure("upload_cl", f"upload {big}, Content-Length", "MiB/s",
               f"boto3 upload_fileobj {big} to the backend", Target(">=", 0.90, ">= 0.90")),
        Figure("upload_chunked", f"upload {big}, chunked", "MiB/s",
               f"boto3 upload_fileobj {big} to the backend", Target(">=", 0.90, ">= 0.90")),
        Figure("rss_peak", f"peak RSS, {huge} chunked upload", "MiB",
               f"part_size x (concurrency + 1) + 80 MiB = {limit}", Target("<", 1.0, "below it")),
        Figure("rss_growth", f"peak RSS, {huge} vs {sizes.label(sizes.memory_small)} upload",
               "MiB", f"peak RSS, {sizes.label(sizes.memory_small)} upload",
               Target("<", 1.10, "< 10 % growth (ratio < 1.10)")),
        Figure("cold_get_tput", f"cold GET {big}, throughput", "MiB/s",
               "boto3 get_object streamed", Target(">=", 0.90, ">= 0.90")),
        Figure("cold_get_until_hit", "same, CPU until the entry is a hit (fill + check)",
               "CPU", "-", CPU_ONLY),
        Figure("cold_get_ttfb", "cold GET, time to first byte", "ms",
               "boto3 get_object first byte", Target("<=", 1.5, "<= 1.5x, or +10 ms", 10.0)),
        Figure("first_get_tput", f"first GET after start, fresh {big} object, throughput",
               "MiB/s", "boto3 get_object streamed", Target(">=", 0.90, ">= 0.90")),
        Figure("first_get_until_hit", "same, CPU until the entry is a hit (fill + check)",
               "CPU", "-", CPU_ONLY),
        Figure("first_get_ttfb", "first GET after start, fresh object, time to first byte", "ms",
               "boto3 get_object first byte", Target("<=", 1.5, "<= 1.5x, or +10 ms", 10.0)),
        Figure("record_ttfb", "cold GET, time to first byte, SHA-256 from its record", "ms",
               "the same, SHA-256 from metadata (no wait for the record)",
               Target("<=", 1.0, "+2 ms or less (median)", 2.0)),
        Figure("cold_range_whole", f"cold Range at 90 % of {big}, time to first byte", "ms",
               "nginx proxy_cache, whole object", Target("<=", 0.05, "<= 0.05 (20x faster)")),
        Figure("cold_range_slice", "same", "ms",
               "nginx proxy_cache, slice 1m (its upstream through bench.shim)",
               Target("<=", 1.0, "<= 1.0 (not slower)")),
        Figure("cold_range_s3", "same (cache issue's acceptance figure)", "ms",
               "boto3 ranged get_object first byte", Target("<=", 2.0, "<= 2.0")),
        Figure("warm_get_tput", f"warm GET {big}, throughput", "MiB/s",
               "nginx sendfile from disk", Target(">=", 0.80, ">= 0.80")),
        Figure("warm_ranges", "warm random 1 MiB Ranges (wrk, 16 connections)", "req/s",
               "nginx sendfile from disk", Target(">=", 0.60, ">= 0.60")),
        Figure("cold_get_count", f"16 concurrent cold GETs of one {conc} object", "GETs",
               "backend GETs allowed: 1", Target("==", 1.0, "exactly 1")),
        Figure("conc_upload_rss", f"16 concurrent {conc} uploads, peak RSS", "MiB",
               "limit: 800 MiB", Target("<", 1.0, "< 800 MiB")),
        Figure("tus_upload", f"tus upload {big}, 64 MiB PATCHes", "MiB/s",
               f"PUT {big} through vidproxy, Content-Length", Target(">=", 0.90, ">= 0.90")),
        Figure("tus_resume_sent", f"tus resume after a cut at {cut} of {big}: bytes sent",
               "MiB", f"the bytes after the cut + {sizes.label(RESUME_ALLOWANCE)} ({resume_limit})",
               Target("<=", 1.0, "<= 1.0")),
        Figure("tus_rss", f"peak RSS, tus upload {big}", "MiB", f"peak RSS, PUT {big}",
               Target("<=", 1.10, "<= 1.10x, or +16 MiB", 16.0)),
    ]  # fmt: skip
    floors = {
        "upload_cl": ("upload", "<= 1.5x read + SHA-256 floor + MD5 for rclone's ETags"),
        "upload_chunked": ("upload", "<= 1.5x read + SHA-256 floor + MD5 for rclone's ETags"),
        "cold_get_tput": ("cold", "<= 1.5x relay + write-to-cache floor"),
        "first_get_tput": ("cold", "<= 1.5x relay + write-to-cache floor"),
        "cold_get_until_hit": ("cold_until_hit", "<= 1.5x that floor + the check's MD5"),
        "first_get_until_hit": ("cold_until_hit", "<= 1.5x that floor + the check's MD5"),
        "warm_get_tput": ("warm", "<= 1.3x nginx"),
        "warm_ranges": ("warm_ranges", "<= 1.3x nginx"),
    }
    for figure in figures:
        if figure.id in floors:
            figure.floor, figure.cpu_target = floors[figure.id]
    return {f.id: f for f in figures}
