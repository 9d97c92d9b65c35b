"""One bench run: build the set-up, run the stages, judge, profile misses, report."""

from __future__ import annotations

import dataclasses
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from contextlib import ExitStack
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from . import profiles, report
from .data import Pattern
from .figures import Figure, catalogue
from .plan import Sizes
from .procs import BenchSetupError, find_tool
from .services import start_env
from .stages import BIG_KEY, CONC_KEY, FLOOR_OF, STAGES, Run
from .uploads import VerifyError

RESULTS = Path(__file__).with_name("results")
EXIT_MISSED = 1
EXIT_BROKEN = 2
_VERSION = re.compile(r"\d+\.\d+[\w.+-]*")


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_bench(sizes: Sizes, out_dir: Path, only: list[str], keep: bool, profile: bool) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = "smoke-" if sizes.name == "smoke" else ""
    meta = _meta(sizes)  # before the stale profiles go: a committed one would read as -dirty
    for stale in out_dir.glob(f"{prefix}profile-*.txt"):
        stale.unlink()  # profiles of an earlier run would pass for this one's
    # SIGTERM (CI's timeout, a kill) unwinds like an error: every child is stopped.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    out = Output(out_dir, prefix, sizes, meta, catalogue(sizes))
    root = Path(tempfile.mkdtemp(prefix="vidproxy-bench-"))
    log(f"{sizes.name} run, {sizes.runs} run(s) per figure, working in {root}")
    try:
        with ExitStack() as stack:
            seeds = {BIG_KEY: sizes.throughput, CONC_KEY: sizes.concurrency}
            env = start_env(stack, root, seeds, out.pattern)
            buf = memoryview(bytearray(sizes.throughput))
            run = Run(env, sizes, out.pattern, out.figures, buf, log, out.extras, out.floors)
            _run_stages(run, only)
            missed = [f.id for f in out.figures.values() if f.vid and f.verdict() is False]
            if sizes.enforce and profile and missed:
                out.write(final=False)  # the measurements are safe before profiling starts
                out.add_profiles(profiles.profile_missed(run, missed, out_dir, prefix))
    except (BenchSetupError, VerifyError, TimeoutError, RuntimeError, OSError) as exc:
        log(f"FAILED: {type(exc).__name__}: {exc}")
        traceback.print_exc()
        _print_logs(root)
        return EXIT_BROKEN
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    print(out.write(final=True))
    missed_any = any(f.verdict() is False for f in out.figures.values() if f.vid)
    return EXIT_MISSED if sizes.enforce and missed_any else 0


def _run_stages(run: Run, only: list[str]) -> None:
    for name, stage in STAGES.items():
        if only and name not in only:
            continue
        for index in range(run.sizes.runs):
            started = time.monotonic()
            stage(run, index)
            log(f"{name} run {index + 1}/{run.sizes.runs}: {time.monotonic() - started:.1f}s")


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


class Output:
    """What a run produces, written as markdown, JSON and PNG."""

    def __init__(
        self, out_dir: Path, prefix: str, sizes: Sizes, meta: dict[str, Any], figures: dict
    ) -> None:
        self.out_dir = out_dir
        self.prefix = prefix
        self.sizes = sizes
        self.meta = meta
        self.figures: dict[str, Figure] = figures
        self.pattern = Pattern()
        self.extras: dict[str, list[float]] = {}
        self.floors: dict[str, list[float]] = {}
        self.profile_tops: dict[str, list[str]] = {}
        self.profile_files: dict[str, str] = {}

    def add_profiles(self, summaries: dict[str, Path]) -> None:
        for figure_id, summary in summaries.items():
            self.profile_tops[figure_id] = profiles.top_lines(summary)
            raw = summary.name.replace(".top.txt", ".txt")
            self.profile_files[figure_id] = f"{raw}, {summary.name}"

    def write(self, final: bool) -> str:
        self.meta["load_after"] = _load()
        ordered = list(self.figures.values())
        judged = self.sizes.enforce
        text = report.markdown(
            ordered,
            self.meta,
            judged,
            self.profile_tops,
            self.profile_files,
            self.extras,
            self.floors,
            FLOOR_OF,
        )
        base = self.out_dir / f"{self.prefix}results"
        base.with_suffix(".md").write_text(text)
        extra = {
            "profiles": self.profile_files,
            "diagnostics": self.extras,
            "floors_cpu_seconds_per_gib": self.floors,
        }
        report.write_json(base.with_suffix(".json"), ordered, self.meta, extra)
        title = f"vidproxy bench, {self.sizes.name}: {self.meta['date']}"
        report.write_chart(base.with_suffix(".png"), ordered, title, judged)
        log(f"wrote {base}.{{md,json,png}}" + ("" if final else " (profiles to follow)"))
        return text


def _print_logs(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.suffix in (".log", ".out") and path.is_file() and path.stat().st_size:
            tail = path.read_bytes()[-3000:].decode("utf-8", "replace")
            print(f"----- {path.relative_to(root)} (tail)\n{tail}", file=sys.stderr)


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _meta(sizes: Sizes) -> dict[str, Any]:
    versions = {
        "python": platform.python_version(),
        "vidproxy": _git_revision(),
        "nginx": _tool_version(["nginx", "-v"]),
        "rclone": _tool_version(["rclone", "version"]),
        "wrk": _tool_version(["wrk", "--version"]),
    }
    for package in ("aiohttp", "aiobotocore", "boto3"):
        versions[package] = metadata.version(package)
    return {
        "mode": sizes.name,
        "runs": sizes.runs,
        "sizes": dataclasses.asdict(sizes),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "load_before": _load(),
        "load_after": None,
        "versions": versions,
        "versions_line": ", ".join(f"{k} {v}" for k, v in versions.items()),
    }


def _tool_version(argv: list[str]) -> str:
    try:
        done = subprocess.run(
            [find_tool(argv[0]), *argv[1:]], capture_output=True, text=True, timeout=20
        )
    except (BenchSetupError, OSError, subprocess.TimeoutExpired):
        return "?"
    found = _VERSION.search(done.stdout + done.stderr)
    return found.group(0) if found else "?"


def _git_revision() -> str:
    repo = Path(__file__).resolve().parent.parent
    git = ["git", "-C", str(repo)]
    try:
        rev = _output([*git, "rev-parse", "--short", "HEAD"])
        dirty = _output([*git, "status", "--porcelain", "--untracked-files=no"])
    except (OSError, subprocess.SubprocessError):
        return "?"
    return rev + ("-dirty" if dirty else "")


def _output(argv: list[str]) -> str:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=20, check=True
    ).stdout.strip()
