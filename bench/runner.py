"""One bench run: build the set-up, run the stages, judge, profile misses, report."""

from __future__ import annotations

import dataclasses
import os
import platform
import re
import shutil
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
from .figures import catalogue
from .plan import Sizes
from .procs import BenchSetupError, find_tool
from .services import start_env
from .stages import BIG_KEY, CONC_KEY, STAGES, Run
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
    for stale in out_dir.glob(f"{prefix}profile-*.txt"):
        stale.unlink()  # profiles of an earlier run would pass for this one's
    meta = _meta(sizes)
    figures = catalogue(sizes)
    root = Path(tempfile.mkdtemp(prefix="vidproxy-bench-"))
    log(f"{sizes.name} run, {sizes.runs} run(s) per figure, working in {root}")
    pattern = Pattern()
    profile_tops: dict[str, list[str]] = {}
    profile_files: dict[str, str] = {}
    extras: dict[str, list[float]] = {}
    try:
        with ExitStack() as stack:
            seeds = {BIG_KEY: sizes.throughput, CONC_KEY: sizes.concurrency}
            env = start_env(stack, root, seeds, pattern)
            buf = memoryview(bytearray(sizes.throughput))
            run = Run(env, sizes, pattern, figures, buf, log, extras)
            for name, stage in STAGES.items():
                if only and name not in only:
                    continue
                for index in range(sizes.runs):
                    started = time.monotonic()
                    stage(run, index)
                    log(f"{name} run {index + 1}/{sizes.runs}: {time.monotonic() - started:.1f}s")
            missed = [f.id for f in figures.values() if f.vid and f.verdict() is False]
            if sizes.enforce and profile and missed:
                summaries = profiles.profile_missed(run, missed, out_dir, prefix)
                for figure_id, summary in summaries.items():
                    profile_tops[figure_id] = profiles.top_lines(summary)
                    raw = summary.name.replace(".top.txt", ".txt")
                    profile_files[figure_id] = f"{raw}, {summary.name}"
    except (BenchSetupError, VerifyError, TimeoutError, RuntimeError, OSError) as exc:
        log(f"FAILED: {type(exc).__name__}: {exc}")
        traceback.print_exc()
        _print_logs(root)
        return EXIT_BROKEN
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    meta["load_after"] = _load()
    ordered = list(figures.values())
    text = report.markdown(ordered, meta, sizes.enforce, profile_tops, profile_files, extras)
    print(text)
    (out_dir / f"{prefix}results.md").write_text(text)
    report.write_json(
        out_dir / f"{prefix}results.json",
        ordered,
        meta,
        {"profiles": profile_files, "diagnostics": extras},
    )
    title = f"vidproxy bench, {sizes.name}: {meta['date']}"
    report.write_chart(out_dir / f"{prefix}results.png", ordered, title, sizes.enforce)
    log(f"wrote {out_dir}/{prefix}results.{{md,json,png}}")
    missed_any = any(f.verdict() is False for f in ordered if f.vid)
    return EXIT_MISSED if sizes.enforce and missed_any else 0


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
