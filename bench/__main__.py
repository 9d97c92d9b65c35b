"""``python -m bench [--smoke] [--runs N] [--only STAGE,...] [--out DIR] [--keep] [--no-profile]``

Exit status: 0 when every target is met (a smoke run judges none), 1 when a
full run misses a target (the table says which, the profile is saved beside
it), 2 when the set-up fails or any byte comes back wrong.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from .plan import FULL, SMOKE
from .runner import RESULTS, run_bench
from .stages import STAGES


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--smoke", action="store_true", help="64 MiB, one run each, no targets judged (CI)"
    )
    parser.add_argument("--runs", type=int, help="runs per figure (full: 3; at least 3 to judge)")
    parser.add_argument("--only", default="", help=f"comma-separated stages: {', '.join(STAGES)}")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument("--no-profile", action="store_true", help="do not profile missed targets")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    if args.runs is not None:
        sizes = dataclasses.replace(sizes, runs=max(1, args.runs))
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in only if name not in STAGES]
    if unknown:
        print(f"bench: unknown stage(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    return run_bench(sizes, args.out, only, args.keep, not args.no_profile)


if __name__ == "__main__":
    sys.exit(main())
