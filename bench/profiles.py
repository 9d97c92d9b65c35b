"""Where the time goes when a target is missed: the vidproxy side of that figure
run once more under ``py-spy record`` (vidproxy's own process, sampled from
outside), saved beside the results with a summary of the hottest functions.

py-spy's overhead slows the profiled run; the profile shows shares, not speeds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

from . import downloads, tus, uploads, wrk
from .downloads import range_start, wait_cached
from .figures import resume_cut
from .plan import CLIENTS
from .services import Vidproxy
from .stages import BIG_KEY, CONC_KEY, Run, ensure_cached

TOP = 15
WARM_REPEAT = 3  # warm GETs in a profile, so they outweigh the fill before them


def _upload(chunked: bool) -> Callable[[Run, Vidproxy], None]:
    def go(run: Run, vp: Vidproxy) -> None:
        size = run.sizes.throughput
        uploads.vidproxy_upload(vp, run.pattern, "profile.bin", size, chunked)
        uploads.verify_stored(run.env, run.pattern, "profile.bin", size)

    return go


def _big_upload(run: Run, vp: Vidproxy) -> None:
    size = run.sizes.memory_big
    uploads.vidproxy_upload(vp, run.pattern, "profile.bin", size, chunked=True)
    uploads.verify_stored(run.env, run.pattern, "profile.bin", size)


def _concurrent_uploads(run: Run, vp: Vidproxy) -> None:
    keys = [f"profile-{n}.bin" for n in range(CLIENTS)]
    uploads.concurrent_uploads(vp, run.pattern, keys, run.sizes.concurrency)
    for key in keys:
        uploads.verify_stored(run.env, run.pattern, key, run.sizes.concurrency)


def _cold_get(run: Run, vp: Vidproxy) -> None:
    downloads.vidproxy_get(vp, BIG_KEY, run.buf, run.sizes.throughput)
    wait_cached(vp, BIG_KEY)


def _cold_range(run: Run, vp: Vidproxy) -> None:
    size = run.sizes.throughput
    downloads.vidproxy_get(vp, BIG_KEY, run.buf, size, range_start(size))
    wait_cached(vp, BIG_KEY)


def _warm_get(run: Run, vp: Vidproxy) -> None:
    ensure_cached(run, BIG_KEY, run.sizes.throughput)
    for _ in range(WARM_REPEAT):
        downloads.vidproxy_get(vp, BIG_KEY, run.buf, run.sizes.throughput)


def _warm_ranges(run: Run, vp: Vidproxy) -> None:
    ensure_cached(run, BIG_KEY, run.sizes.throughput)
    wrk.run_wrk(vp.port, f"/videos/{BIG_KEY}", run.sizes.throughput, run.sizes.wrk_seconds)


def _cold_count(run: Run, vp: Vidproxy) -> None:
    downloads.concurrent_cold_gets(
        run.env, vp, run.pattern, CONC_KEY, run.sizes.concurrency, CLIENTS
    )


def _tus_upload(run: Run, vp: Vidproxy) -> None:
    tus.upload(vp, run.pattern, "profile.bin", run.sizes.throughput)
    uploads.verify_stored(run.env, run.pattern, "profile.bin", run.sizes.throughput)


def _tus_resume(run: Run, vp: Vidproxy) -> None:
    size = run.sizes.throughput
    tus.cut_then_resume(vp, run.pattern, "profile.bin", size, resume_cut(size))
    uploads.verify_stored(run.env, run.pattern, "profile.bin", size)


# figure id -> (profile name, which vidproxy, what it runs)
PROFILES: dict[str, tuple[str, str, Callable[[Run, Vidproxy], None]]] = {
    "upload_cl": ("upload-content-length", "direct", _upload(chunked=False)),
    "upload_chunked": ("upload-chunked", "direct", _upload(chunked=True)),
    "rss_peak": ("upload-big-chunked", "direct", _big_upload),
    "rss_growth": ("upload-big-chunked", "direct", _big_upload),
    "conc_upload_rss": ("concurrent-uploads", "direct", _concurrent_uploads),
    "cold_get_tput": ("cold-get", "direct", _cold_get),
    "cold_get_ttfb": ("cold-get", "direct", _cold_get),
    "first_get_tput": ("first-get", "direct", _cold_get),
    "first_get_ttfb": ("first-get", "direct", _cold_get),
    "cold_range_whole": ("cold-range", "direct", _cold_range),
    "cold_range_s3": ("cold-range", "direct", _cold_range),
    "cold_range_slice": ("cold-range", "direct", _cold_range),
    "warm_get_tput": ("warm-get", "direct", _warm_get),
    "warm_ranges": ("warm-ranges", "direct", _warm_ranges),
    "cold_get_count": ("concurrent-cold-gets", "counted", _cold_count),
    "tus_upload": ("tus-upload", "direct", _tus_upload),
    "tus_rss": ("tus-upload", "direct", _tus_upload),
    "tus_resume_sent": ("tus-resume", "direct", _tus_resume),
}


def profile_missed(run: Run, missed: list[str], out_dir: Path, prefix: str) -> dict[str, Path]:
    """Profile each missed figure once (figures sharing a workload share a profile);
    returns figure id -> summary file."""
    done: dict[str, Path] = {}
    summaries: dict[str, Path] = {}
    for figure_id in missed:
        name, which, work = PROFILES[figure_id]
        if name not in done:
            vp = run.env.direct if which == "direct" else run.env.counted
            raw = out_dir / f"{prefix}profile-{name}.txt"
            run.log(f"profiling {name} (py-spy) -> {raw.name}")
            vp.restart(profile=raw)
            try:
                work(run, vp)
            finally:
                vp.stop()
                vp.start()
            done[name] = write_summary(raw, out_dir / f"{prefix}profile-{name}.top.txt")
        summaries[figure_id] = done[name]
    return summaries


def write_summary(raw: Path, out: Path) -> Path:
    out.write_text(summarize(raw))
    return out


# Leaves where a thread only waits (py-spy counts some such waits as active):
# the thread pool's workers waiting for work, the event loop in epoll.
IDLE_LEAVES = frozenset(
    {
        "_worker (thread.py)",
        "EpollSelector.select (selectors.py)",
        "Condition.wait (threading.py)",
        "Event.wait (threading.py)",
    }
)
START_UP = "_find_and_load (<frozen importlib._bootstrap>)"
# Frames on nearly every stack (the loop, the thread machinery): not worth listing.
PLUMBING_FILES = ("(runners.py)", "(base_events.py)", "(events.py)", "(threading.py)")
PLUMBING = frozenset({"<module> (vidproxy)", "main (__main__.py)", "serve (__main__.py)"})


def summarize(raw: Path, top: int = TOP) -> str:
    """Top functions by own samples and by samples with them on the stack,
    as shares of the busy samples (start-up imports and idle waits left out)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = idle = start_up = 0
    for line in raw.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_function(frame) for frame in stack.split(";")]
        total += count
        if frames[-1] in IDLE_LEAVES:
            idle += count
            continue
        if START_UP in frames:
            start_up += count
            continue
        own[frames[-1]] += count
        for name in set(frames):
            if name not in PLUMBING and not name.endswith(PLUMBING_FILES):
                inclusive[name] += count
    busy = total - idle - start_up
    if not busy:
        return f"{raw.name}: no busy samples\n"
    lines = [
        f"{raw.name}: {total} samples: {busy} busy, {idle} idle waits, {start_up} start-up imports",
        "(C code, e.g. hashing, counts as its Python caller; shares are of the busy samples)",
        "",
        "own time (the function itself):",
    ]
    lines += [f"  {100 * n / busy:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines += ["", "on the stack (the function and what it calls; event loop plumbing left out):"]
    lines += [f"  {100 * n / busy:5.1f}%  {name}" for name, n in inclusive.most_common(top * 2)]
    return "\n".join(lines) + "\n"


def _function(frame: str) -> str:
    """``name (path/file.py:123)`` -> ``name (file.py)``: lines merged per function."""
    name, _, where = frame.partition(" (")
    file = where.rstrip(")").rpartition(":")[0].rsplit("/", 1)[-1]
    return f"{name} ({file})" if file else name


def top_lines(summary: Path, count: int = 5) -> list[str]:
    """The first ``count`` own-time lines of a summary, for the report."""
    lines = summary.read_text().splitlines()
    try:
        start = lines.index("own time (the function itself):") + 1
    except ValueError:
        return lines[:1]
    return [line.strip() for line in lines[start : start + count]]
