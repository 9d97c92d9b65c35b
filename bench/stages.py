"""The stages of a bench run. Each run of a figure measures vidproxy and its
baseline back to back, first one then the other on even runs and the other way
round on odd ones, and checks every byte after the clocks stop."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from . import downloads, records, tus, uploads, wrk
from .data import Pattern
from .downloads import Timing, check, range_start, wait_cached
from .figures import Figure, resume_cut, resume_limit_bytes
from .plan import CLIENTS, CONCURRENT_RSS_LIMIT, Sizes
from .services import BUCKET, Env
from .units import MiB, mib
from .uploads import VerifyError

BIG_KEY = "object-big.bin"  # seeded before rclone starts: the throughput size
CONC_KEY = "object-conc.bin"  # seeded too: the concurrency size

T = TypeVar("T")


@dataclass
class Run:
    env: Env
    sizes: Sizes
    pattern: Pattern
    figures: dict[str, Figure]
    buf: memoryview  # one object's worth, reused by every download
    log: Callable[[str], None]
    # Diagnostics that explain the figures (name -> one value per run).
    extras: dict[str, list[float]] = field(default_factory=dict)

    def fig(self, name: str) -> Figure:
        return self.figures[name]

    def extra(self, name: str, value: float) -> None:
        self.extras.setdefault(name, []).append(value)


def in_turn(run_index: int, steps: list[tuple[str, Callable[[], T]]]) -> dict[str, T]:
    """Run the steps, reversed on odd runs, so neither side always goes first.
    Dirty pages left by the step before (uploads, cache files) are flushed first,
    so no step pays for another's writeback."""
    ordered = steps if run_index % 2 == 0 else steps[::-1]
    results = {}
    for name, step in ordered:
        os.sync()
        results[name] = step()
    return results


def rate(size: int, seconds: float) -> float:
    return size / MiB / seconds


def uploads_stage(run: Run, index: int) -> None:
    env, pattern, size = run.env, run.pattern, run.sizes.throughput
    label = run.sizes.label(size)

    def step(kind: str) -> Callable[[], float]:
        def go() -> float:
            key = f"upload-{kind}-{index}.bin"
            if kind == "boto3":
                seconds = uploads.boto3_upload(env, pattern, key, size)
                started = time.perf_counter()
                env.s3.head_object(Bucket=BUCKET, Key=key)
                head_ms = (time.perf_counter() - started) * 1e3
                run.extra(f"rclone's first HEAD of a just-uploaded {label} object, ms", head_ms)
            else:
                chunked = kind == "chunked"
                seconds = uploads.vidproxy_upload(env.direct, pattern, key, size, chunked)
            uploads.verify_stored(env, pattern, key, size)
            return seconds

        return go

    took = in_turn(index, [(k, step(k)) for k in ("boto3", "cl", "chunked")])
    base = rate(size, took["boto3"])
    run.fig("upload_cl").add(rate(size, took["cl"]), base)
    run.fig("upload_chunked").add(rate(size, took["chunked"]), base)


def memory_stage(run: Run, index: int) -> None:
    """Peak RSS (VmHWM) of a freshly started vidproxy over one chunked upload."""
    env, sizes = run.env, run.sizes

    def peak_for(size: int) -> Callable[[], float]:
        def go() -> float:
            env.direct.restart()
            idle = env.direct.idle_rss()
            key = f"memory-{size}-{index}.bin"
            uploads.vidproxy_upload(env.direct, run.pattern, key, size, chunked=True)
            peak = env.direct.peak_rss()
            uploads.verify_stored(env, run.pattern, key, size)
            run.extra(f"vidproxy peak RSS minus idle RSS, {sizes.label(size)} upload, MiB",
                      mib(peak - idle))  # fmt: skip
            run.log(f"  {sizes.label(size)} upload: idle {mib(idle):.0f} MiB, peak {mib(peak):.0f}")
            run.extra("vidproxy RSS after start and warm-up GET, MiB", mib(idle))
            return mib(peak)

        return go

    peaks = in_turn(
        index, [("small", peak_for(sizes.memory_small)), ("big", peak_for(sizes.memory_big))]
    )
    run.fig("rss_peak").add(peaks["big"], mib(sizes.rss_limit))
    run.fig("rss_growth").add(peaks["big"], peaks["small"])


def concurrent_uploads_stage(run: Run, index: int) -> None:
    env, size = run.env, run.sizes.concurrency
    env.direct.restart()
    keys = [f"concurrent-{index}-{n}.bin" for n in range(CLIENTS)]
    uploads.concurrent_uploads(env.direct, run.pattern, keys, size)
    peak = env.direct.peak_rss()
    for key in keys:
        uploads.verify_stored(env, run.pattern, key, size)
    run.fig("conc_upload_rss").add(mib(peak), mib(CONCURRENT_RSS_LIMIT))


def cold_get_stage(run: Run, index: int) -> None:
    """Whole-object cold GET: vidproxy with an empty cache against boto3."""
    env, size = run.env, run.sizes.throughput
    env.direct.restart()
    env.prime()

    def verified(get: Callable[[], Timing], what: str, vp: Any = None) -> Callable[[], Timing]:
        def go() -> Timing:
            timing = get()
            check(run.buf, run.pattern, 0, size, what)
            if vp is not None:
                wait_cached(vp, BIG_KEY)  # the fill's fsync and commit, before the next step
            return timing

        return go

    got = in_turn(index, [
        ("boto3", verified(lambda: downloads.boto3_get(env, BIG_KEY, run.buf, size), "boto3")),
        ("vid", verified(lambda: _vid_get(env.direct, run, BIG_KEY, size), "vidproxy cold GET",
                         env.direct)),
    ])  # fmt: skip
    if got["vid"].headers.get("x-cache") != "MISS":
        raise VerifyError("vidproxy's cold GET was not a cache miss")
    vid, base = got["vid"], got["boto3"]
    run.fig("cold_get_tput").add(rate(size, vid.elapsed), rate(size, base.elapsed))
    run.fig("cold_get_ttfb").add(vid.ttfb * 1e3, base.ttfb * 1e3)


def record_ttfb_stage(run: Run, index: int) -> None:
    """Cold GETs' first byte: the digest from its record, or from metadata (no wait)."""
    env = run.env
    if index == 0:
        records.upload_pairs(env, run.pattern)
    env.direct.restart()
    ms: dict[str, list[float]] = {"record": [], "metadata": []}
    for n in range(records.PAIRS):
        got = in_turn(index + n, [
            ("record", records.cold_get(env, run.pattern, run.buf, records.record_key(n))),
            ("metadata", records.cold_get(env, run.pattern, run.buf, records.metadata_key(n))),
        ])  # fmt: skip
        for name, timing in got.items():
            ms[name].append(timing.ttfb * 1e3)
    run.fig("record_ttfb").add(statistics.median(ms["record"]), statistics.median(ms["metadata"]))


def _vid_get(vp: Any, run: Run, key: str, size: int, start: int | None = None) -> Timing:
    return downloads.vidproxy_get(vp, key, run.buf, size, start)


def cold_range_stage(run: Run, index: int) -> None:
    """``Range: bytes=<90 %>-`` on empty caches: vidproxy, nginx (both variants), boto3.
    Each vidproxy's fill is let finish before the next step, so none competes."""
    env, size = run.env, run.sizes.throughput
    start = range_start(size)
    env.direct.restart()
    env.counted.restart()
    env.nginx.restart()
    env.prime()
    path = f"/{BUCKET}/{BIG_KEY}"

    def verified(get: Callable[[], Timing], what: str, vp: Any = None) -> Callable[[], Timing]:
        def go() -> Timing:
            timing = get()
            check(run.buf, run.pattern, start, size, what)
            if vp is not None:
                wait_cached(vp, BIG_KEY)
            return timing

        return go

    ports = env.nginx.ports
    got = in_turn(index, [
        ("boto3", verified(lambda: downloads.boto3_get(env, BIG_KEY, run.buf, size, start),
                           "boto3 range")),
        ("direct", verified(lambda: _vid_get(env.direct, run, BIG_KEY, size, start),
                            "vidproxy range", env.direct)),
        ("whole", verified(lambda: downloads.http_get(ports.whole, path, run.buf, size, start),
                           "nginx whole range")),
        ("slice", verified(lambda: downloads.http_get(ports.slice, path, run.buf, size, start),
                           "nginx slice range")),
        ("counted", verified(lambda: _vid_get(env.counted, run, BIG_KEY, size, start),
                             "vidproxy (shim) range", env.counted)),
    ])  # fmt: skip
    ms = {name: timing.ttfb * 1e3 for name, timing in got.items()}
    os.sync()
    shim = downloads.boto3_get(env, BIG_KEY, run.buf, size, start, via_shim=True)
    check(run.buf, run.pattern, start, size, "boto3 range through bench.shim")
    run.extra("bench.shim's cost: boto3 ranged first byte through it minus direct, ms",
              shim.ttfb * 1e3 - ms["boto3"])  # fmt: skip
    run.fig("cold_range_whole").add(ms["direct"], ms["whole"])
    # nginx's slice module needs bench.shim in front of rclone; vidproxy is not
    # given the hop here (its whole-object fill would pay for relaying 1 GiB):
    # the shim's own cost is measured below and is nginx's handicap.
    run.fig("cold_range_slice").add(ms["direct"], ms["slice"])
    run.fig("cold_range_s3").add(ms["direct"], ms["boto3"])
    run.extra("cold Range first byte, vidproxy behind bench.shim like nginx slice, ms",
              ms["counted"])  # fmt: skip


def ensure_cached(run: Run, key: str, size: int) -> None:
    vp = run.env.direct
    downloads.vidproxy_get(vp, key, run.buf, size)
    wait_cached(vp, key)


def warm_get_stage(run: Run, index: int) -> None:
    env, size = run.env, run.sizes.throughput
    if index == 0:
        ensure_cached(run, BIG_KEY, size)

    def verified(get: Callable[[], Timing], what: str) -> Callable[[], Timing]:
        def go() -> Timing:
            timing = get()
            check(run.buf, run.pattern, 0, size, what)
            return timing

        return go

    static = env.nginx.ports.static
    got = in_turn(index, [
        ("nginx", verified(lambda: downloads.http_get(static, f"/{BUCKET}/{BIG_KEY}", run.buf,
                                                      size), "nginx sendfile")),
        ("vid", verified(lambda: _vid_get(env.direct, run, BIG_KEY, size), "vidproxy warm GET")),
    ])  # fmt: skip
    if got["vid"].headers.get("x-cache") != "HIT":
        raise VerifyError("vidproxy's warm GET was not a cache hit")
    run.fig("warm_get_tput").add(rate(size, got["vid"].elapsed), rate(size, got["nginx"].elapsed))


def warm_ranges_stage(run: Run, index: int) -> None:
    env, size, seconds = run.env, run.sizes.throughput, run.sizes.wrk_seconds
    if index == 0:
        ensure_cached(run, BIG_KEY, size)
    targets = {
        "nginx": (env.nginx.ports.static, f"/{BUCKET}/{BIG_KEY}"),
        "vid": (env.direct.port, f"/videos/{BIG_KEY}"),
    }

    def step(name: str) -> Callable[[], wrk.WrkResult]:
        def go() -> wrk.WrkResult:
            port, path = targets[name]
            result = wrk.run_wrk(port, path, size, seconds)
            wrk.verify_sample(port, path, run.pattern, size, seed=index)
            return result

        return go

    got = in_turn(index, [(name, step(name)) for name in targets])
    run.fig("warm_ranges").add(got["vid"].rate, got["nginx"].rate)
    for name, result in got.items():
        who = "vidproxy" if name == "vid" else "nginx"
        run.extra(f"wrk latency p50, {who}, ms", result.p50_ms)
        run.extra(f"wrk latency p99, {who}, ms", result.p99_ms)


def cold_count_stage(run: Run, index: int) -> None:
    env = run.env
    env.counted.restart()
    env.prime()
    count = downloads.concurrent_cold_gets(
        env, env.counted, run.pattern, CONC_KEY, run.sizes.concurrency, CLIENTS
    )
    run.fig("cold_get_count").add(float(count), 1.0)


def tus_stage(run: Run, index: int) -> None:
    """A tus upload in 64 MiB PATCHes against a PUT of the same bytes, each on a
    freshly started vidproxy (so its peak RSS is that upload's); then a tus
    upload cut at 90 % and resumed, counting the bytes the resume sends."""
    env, pattern, size = run.env, run.pattern, run.sizes.throughput

    def step(kind: str) -> Callable[[], tuple[float, float]]:
        def go() -> tuple[float, float]:
            key = f"tus-{kind}-{index}.bin"
            env.direct.restart()
            if kind == "put":
                seconds = uploads.vidproxy_upload(env.direct, pattern, key, size, chunked=False)
            else:
                seconds = tus.upload(env.direct, pattern, key, size)
            peak = mib(env.direct.peak_rss())
            uploads.verify_stored(env, pattern, key, size)
            return seconds, peak

        return go

    got = in_turn(index, [(kind, step(kind)) for kind in ("put", "tus")])
    run.fig("tus_upload").add(rate(size, got["tus"][0]), rate(size, got["put"][0]))
    run.fig("tus_rss").add(got["tus"][1], got["put"][1])
    os.sync()
    key, cut = f"tus-resume-{index}.bin", resume_cut(size)
    resumed = tus.cut_then_resume(env.direct, pattern, key, size, cut)
    uploads.verify_stored(env, pattern, key, size)
    run.fig("tus_resume_sent").add(mib(resumed.sent), mib(resume_limit_bytes(size)))
    run.extra(f"tus resume after a cut at {run.sizes.label(cut)}: offset resumed at, MiB",
              mib(resumed.offset))  # fmt: skip


STAGES: dict[str, Callable[[Run, int], None]] = {
    "uploads": uploads_stage,
    "memory": memory_stage,
    "concurrent-uploads": concurrent_uploads_stage,
    "cold-get": cold_get_stage,
    "record-ttfb": record_ttfb_stage,
    "cold-range": cold_range_stage,
    "warm-get": warm_get_stage,
    "warm-ranges": warm_ranges_stage,
    "cold-count": cold_count_stage,
    "tus": tus_stage,
}
