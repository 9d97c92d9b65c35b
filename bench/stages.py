"""The stages of a bench run. Each run of a figure measures vidproxy and its
baseline back to back, first one then the other on even runs and the other way
round on odd ones, and checks every byte after the clocks stop."""

from __future__ import annotations

import hashlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from . import client, downloads, records, tus, uploads, wrk
from .data import Pattern
from .downloads import Timing, check, range_start, wait_cached
from .figures import Figure, resume_cut, resume_limit_bytes
from .plan import CLIENTS, CONCURRENT_RSS_LIMIT, Sizes
from .procs import Proc, cpu_seconds, free_port, port_open, self_cpu_seconds
from .services import BUCKET, Env
from .units import GiB, MiB, mib
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
    # The floors' CPU seconds per GiB (name -> one value per run), see floors_stage.
    floors: dict[str, list[float]] = field(default_factory=dict)

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


def per_gib(cpu: float, size: float) -> float:
    return cpu / (size / GiB)


def with_cpu(go: Callable[[], T], cpu: Callable[[], float]) -> Callable[[], tuple[T, float]]:
    """``go`` and the CPU seconds that ``cpu`` (a process's counter) moved meanwhile."""

    def measured() -> tuple[T, float]:
        before = cpu()
        result = go()
        return result, cpu() - before

    return measured


def uploads_stage(run: Run, index: int) -> None:
    env, pattern, size = run.env, run.pattern, run.sizes.throughput
    label = run.sizes.label(size)

    def step(kind: str) -> Callable[[], tuple[float, float]]:
        """The upload's seconds and the CPU seconds of the sender's side (vidproxy's
        process, or this one for boto3), counted before the bytes are checked."""

        def go() -> tuple[float, float]:
            key = f"upload-{kind}-{index}.bin"
            if kind == "boto3":
                seconds, cpu = with_cpu(
                    lambda: uploads.boto3_upload(env, pattern, key, size), self_cpu_seconds
                )()
                started = time.perf_counter()
                env.s3.head_object(Bucket=BUCKET, Key=key)
                head_ms = (time.perf_counter() - started) * 1e3
                run.extra(f"rclone's first HEAD of a just-uploaded {label} object, ms", head_ms)
            else:
                chunked = kind == "chunked"
                seconds, cpu = with_cpu(
                    lambda: uploads.vidproxy_upload(env.direct, pattern, key, size, chunked),
                    env.direct.cpu,
                )()
            uploads.verify_stored(env, pattern, key, size)
            return seconds, cpu

        return go

    took = in_turn(index, [(k, step(k)) for k in ("boto3", "cl", "chunked")])
    base, base_cpu = took["boto3"]
    for kind in ("cl", "chunked"):
        seconds, cpu = took[kind]
        run.fig(f"upload_{kind}").add(rate(size, seconds), rate(size, base))
        run.fig(f"upload_{kind}").add_cpu(per_gib(cpu, size), per_gib(base_cpu, size))


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


@dataclass
class Measured:
    timing: Timing
    cpu: float  # CPU seconds of the serving side to the last byte: vidproxy's, or boto3's
    # ... and up to the entry's first hit: the fill's fsync, commit and the check after it.
    cpu_until_hit: float


def whole_get(
    run: Run, key: str, get: Callable[[], Timing], what: str, cpu: Callable[[], float],
    vp: Any = None,
) -> Callable[[], Measured]:  # fmt: skip
    """A whole-object GET of ``key`` into ``run.buf``: its CPU is counted to the last
    byte, and (vidproxy) again once the entry is a hit; its bytes checked after."""

    def go() -> Measured:
        before = cpu()
        timing = get()
        to_last_byte = cpu() - before
        if vp is not None:
            wait_cached(vp, key)
        until_hit = cpu() - before
        check(run.buf, run.pattern, 0, run.sizes.throughput, what)
        return Measured(timing, to_last_byte, until_hit)

    return go


def _add_whole(run: Run, prefix: str, got: dict[str, Measured]) -> None:
    vid, base = got["vid"].timing, got["boto3"].timing
    if vid.headers.get("x-cache") != "MISS":
        raise VerifyError(f"vidproxy's GET ({prefix}) was not a cache miss")
    run.fig(f"{prefix}_tput").add(rate(vid.size, vid.elapsed), rate(base.size, base.elapsed))
    boto3_cpu = per_gib(got["boto3"].cpu, base.size)
    run.fig(f"{prefix}_tput").add_cpu(per_gib(got["vid"].cpu, vid.size), boto3_cpu)
    run.fig(f"{prefix}_until_hit").add_cpu(per_gib(got["vid"].cpu_until_hit, vid.size), boto3_cpu)
    run.fig(f"{prefix}_ttfb").add(vid.ttfb * 1e3, base.ttfb * 1e3)


def cold_get_stage(run: Run, index: int) -> None:
    """Whole-object cold GET: vidproxy with an empty cache (warmed by one small
    GET after its start) against boto3."""
    env, size = run.env, run.sizes.throughput
    env.direct.restart()
    env.prime()
    got = in_turn(index, [
        ("boto3", whole_get(run, BIG_KEY, lambda: downloads.boto3_get(env, BIG_KEY, run.buf, size),
                            "boto3", self_cpu_seconds)),
        ("vid", whole_get(run, BIG_KEY, lambda: _vid_get(env.direct, run, BIG_KEY, size),
                          "vidproxy cold GET", env.direct.cpu, env.direct)),
    ])  # fmt: skip
    _add_whole(run, "cold_get", got)


def first_get_stage(run: Run, index: int) -> None:
    """A player's first play: a fresh object, written to the backend's disk just
    before (and synced); vidproxy restarted on an empty cache with no warm-up
    GET, so the measured request is its first; the client reads it with
    recv_into into a preallocated buffer on a fresh connection. Then the same
    process's second cold GET (another object), to show what was the first's own."""
    env, size = run.env, run.sizes.throughput
    key = f"fresh-{index}.bin"
    uploads.boto3_upload(env, run.pattern, key, size)  # through rclone, onto its disk
    os.sync()
    started = time.perf_counter()
    env.s3.head_object(Bucket=BUCKET, Key=key)  # rclone's MD5 of the new file: outside
    run.extra("rclone's first HEAD of the fresh object (it hashes the file), ms",
              (time.perf_counter() - started) * 1e3)  # fmt: skip
    env.direct.restart(warm=False)
    os.sync()
    got = in_turn(index, [
        ("boto3", whole_get(run, key, lambda: downloads.boto3_get(env, key, run.buf, size),
                            "boto3 fresh", self_cpu_seconds)),
        ("vid", whole_get(run, key, lambda: _vid_get(env.direct, run, key, size),
                          "vidproxy first GET", env.direct.cpu, env.direct)),
    ])  # fmt: skip
    _add_whole(run, "first_get", got)
    os.sync()
    env.prime()
    second = whole_get(run, BIG_KEY, lambda: _vid_get(env.direct, run, BIG_KEY, size),
                       "vidproxy second cold GET", env.direct.cpu, env.direct)()  # fmt: skip
    run.extra("the same vidproxy's second cold GET (another object): first byte, ms",
              second.timing.ttfb * 1e3)  # fmt: skip
    run.extra("the same vidproxy's second cold GET: MiB/s", rate(size, second.timing.elapsed))
    env.delete(key)


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

    def verified(
        get: Callable[[], Timing], what: str, cpu: Callable[[], float]
    ) -> Callable[[], Measured]:
        def go() -> Measured:
            timing, spent = with_cpu(get, cpu)()
            check(run.buf, run.pattern, 0, size, what)
            return Measured(timing, spent, spent)

        return go

    static = env.nginx.ports.static
    got = in_turn(index, [
        ("nginx", verified(lambda: downloads.http_get(static, f"/{BUCKET}/{BIG_KEY}", run.buf,
                                                      size), "nginx sendfile", env.nginx.cpu)),
        ("vid", verified(lambda: _vid_get(env.direct, run, BIG_KEY, size), "vidproxy warm GET",
                         env.direct.cpu)),
    ])  # fmt: skip
    vid, base = got["vid"], got["nginx"]
    if vid.timing.headers.get("x-cache") != "HIT":
        raise VerifyError("vidproxy's warm GET was not a cache hit")
    figure = run.fig("warm_get_tput")
    figure.add(rate(size, vid.timing.elapsed), rate(size, base.timing.elapsed))
    figure.add_cpu(per_gib(vid.cpu, size), per_gib(base.cpu, size))


def warm_ranges_stage(run: Run, index: int) -> None:
    env, size, seconds = run.env, run.sizes.throughput, run.sizes.wrk_seconds
    if index == 0:
        ensure_cached(run, BIG_KEY, size)
    targets = {
        "nginx": (env.nginx.ports.static, f"/{BUCKET}/{BIG_KEY}", env.nginx.cpu),
        "vid": (env.direct.port, f"/videos/{BIG_KEY}", env.direct.cpu),
    }

    def step(name: str) -> Callable[[], tuple[wrk.WrkResult, float]]:
        def go() -> tuple[wrk.WrkResult, float]:
            port, path, cpu = targets[name]
            result, spent = with_cpu(lambda: wrk.run_wrk(port, path, size, seconds), cpu)()
            wrk.verify_sample(port, path, run.pattern, size, seed=index)
            return result, spent

        return go

    got = in_turn(index, [(name, step(name)) for name in targets])
    (vid, vid_cpu), (base, base_cpu) = got["vid"], got["nginx"]
    run.fig("warm_ranges").add(vid.rate, base.rate)
    # Every answer is 1 MiB: CPU per GiB served is CPU per 1,024 ranges.
    run.fig("warm_ranges").add_cpu(
        per_gib(vid_cpu, vid.requests * MiB), per_gib(base_cpu, base.requests * MiB)
    )
    for name, (result, _) in got.items():
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


def floors_stage(run: Run, index: int) -> None:
    """CPU seconds per GiB of bare aiohttp servers (bench.floors) doing only the
    unavoidable part of each job, and of MD5 (what rclone's ETags need), in this run."""
    env, size = run.env, run.sizes.throughput
    cache = env.root / "floors"
    cache.mkdir(exist_ok=True)
    port = free_port()
    argv = [sys.executable, "-m", "bench.floors", "--port", str(port), "--data",
            str(env.data_dir / BUCKET), "--upstream-port", str(env.rclone_port),
            "--cache-dir", str(cache)]  # fmt: skip
    server = Proc("floors", argv, env.root / "floors.log", cwd=Path(__file__).parent.parent)
    server.start(lambda: port_open(port))
    try:
        spent = _floor_cpus(run, server.pid, port)
    finally:
        server.stop()
    hashing = _md5_cpu(run.pattern, size)
    values = {
        "read and discard an upload": spent["discard"],
        "read an upload + SHA-256": spent["sha256"],
        "MD5 of the body (Content-MD5 for rclone's ETags), in-process": hashing,
        FLOOR_OF["upload"]: spent["sha256"] + hashing,
        FLOOR_OF["cold"]: spent["relay"],
        FLOOR_OF["cold_until_hit"]: spent["relay"] + hashing,
        FLOOR_OF["warm"]: spent["sendfile"],
    }
    for name, value in values.items():
        run.floors.setdefault(name, []).append(value)


FLOOR_OF = {  # what a figure's floor name (figures.catalogue) stands for in run.floors
    "upload": "upload: read + SHA-256 + MD5",
    "cold": "cold: relay from the backend + write to the cache file",
    "cold_until_hit": "cold until a hit: relay + write + MD5 (check of an object with no SHA-256)",
    "warm": "warm: loop.sendfile from disk",
}


def _floor_cpus(run: Run, pid: int, port: int) -> dict[str, float]:
    size, spent = run.sizes.throughput, {}
    for name in ("discard", "sha256"):
        before = cpu_seconds(pid)
        pieces = run.pattern.pieces(0, size, uploads.SEND_PIECE)
        reply = client.upload(port, f"/{name}", pieces, size)
        if reply.status != 201:
            raise VerifyError(f"floor {name}: {reply.status}")
        spent[name] = per_gib(cpu_seconds(pid) - before, size)
    for name in ("sendfile", "relay"):
        os.sync()
        before = cpu_seconds(pid)
        reply = client.get(port, f"/{name}/{BIG_KEY}", into=run.buf)
        spent[name] = per_gib(cpu_seconds(pid) - before, size)
        if reply.status != 200 or reply.size != size:
            raise VerifyError(f"floor {name}: {reply.status}, {reply.size} bytes")
        check(run.buf, run.pattern, 0, size, f"floor {name}")
    return spent


def _md5_cpu(pattern: Pattern, size: int) -> float:
    started = time.process_time()
    hashed = hashlib.md5()
    for piece in pattern.pieces(0, size, uploads.SEND_PIECE):
        hashed.update(piece)
    return per_gib(time.process_time() - started, size)


STAGES: dict[str, Callable[[Run, int], None]] = {
    "uploads": uploads_stage,
    "memory": memory_stage,
    "concurrent-uploads": concurrent_uploads_stage,
    "cold-get": cold_get_stage,
    "first-get": first_get_stage,
    "record-ttfb": record_ttfb_stage,
    "cold-range": cold_range_stage,
    "warm-get": warm_get_stage,
    "warm-ranges": warm_ranges_stage,
    "cold-count": cold_count_stage,
    "tus": tus_stage,
    "floors": floors_stage,
}
