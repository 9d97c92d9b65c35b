"""The results: a markdown table (printed and saved), JSON, and a PNG chart."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .figures import Figure

DECIMALS = {"MiB/s": 0, "ms": 1, "MiB": 0, "req/s": 0, "GETs": 0, "CPU": 2}


def _num(value: float, unit: str) -> str:
    return f"{value:,.{DECIMALS.get(unit, 2)}f}"


def _spread(values: list[float], unit: str) -> str:
    if len(values) == 1:
        return _num(values[0], unit)
    s = sorted(values)
    mid = s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2
    return f"{_num(mid, unit)} ({_num(s[0], unit)}-{_num(s[-1], unit)})"


def _ratio(values: list[float]) -> str:
    def fmt(r: float) -> str:
        return f"{r:.3g}" if r < 10 else f"{r:.0f}"

    s = sorted(values)
    if len(s) == 1:
        return fmt(s[0])
    mid = s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2
    return f"**{fmt(mid)}** ({fmt(s[0])}-{fmt(s[-1])})"


def _verdict(fig: Figure, judged: bool) -> str:
    met = fig.verdict()
    if met is None:
        return "not run"
    if not judged:
        return "met" if met else "missed (not judged: smoke)"
    return "met" if met else "**MISSED**"


def table(figures: list[Figure], judged: bool) -> str:
    head = (
        "| figure | vidproxy, median (min-max) | baseline | baseline, median (min-max) "
        "| ratio vidproxy / baseline | target | result "
        "| CPU-s/GiB vidproxy / baseline |\n|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for fig in figures:
        if not fig.vid:
            continue
        rows.append(
            f"| {fig.title} | {_spread(fig.vid, fig.unit)} {fig.unit} | {fig.baseline} "
            f"| {_spread(fig.base, fig.unit)} {fig.unit} | {_ratio(fig.ratios)} "
            f"| {fig.target.text} | {_verdict(fig, judged)} | {_cpu_pair(fig)} |"
        )
    return head + "\n".join(rows) + "\n"


def _cpu_pair(fig: Figure) -> str:
    if not fig.cpu_vid:
        return ""
    base = _spread(fig.cpu_base, "CPU") if fig.cpu_base else "-"
    return f"{_spread(fig.cpu_vid, 'CPU')} / {base}"


def _median(values: list[float]) -> float:
    s = sorted(values)
    return s[len(s) // 2] if len(s) % 2 else (s[len(s) // 2 - 1] + s[len(s) // 2]) / 2


def _ratio_or_dash(value: float, against: list[float] | None) -> str:
    below = _median(against) if against else 0.0
    return f"{value / below:.2f}" if below > 0 else "-"


def cpu_table(
    figures: list[Figure], floors: dict[str, list[float]], floor_of: dict[str, str]
) -> str:
    """vidproxy's CPU seconds per GiB against its floor (same run) and its baseline's."""
    head = (
        "| figure | vidproxy CPU-s/GiB | baseline's CPU-s/GiB | vidproxy / baseline "
        "| floor | floor CPU-s/GiB | vidproxy / floor | target |\n"
        "|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for fig in figures:
        if not fig.cpu_vid:
            continue
        vid = _median(fig.cpu_vid)
        # A short (smoke) run can spend less than one clock tick: no ratio then.
        base = _ratio_or_dash(vid, fig.cpu_base)
        name = floor_of.get(fig.floor or "", "")
        floor = floors.get(name)
        versus = _ratio_or_dash(vid, floor)
        rows.append(
            f"| {fig.title} | {_spread(fig.cpu_vid, 'CPU')} "
            f"| {_spread(fig.cpu_base, 'CPU') if fig.cpu_base else '-'} | {base} "
            f"| {name or '-'} | {_spread(floor, 'CPU') if floor else '-'} | {versus} "
            f"| {fig.cpu_target} |"
        )
    return head + "\n".join(rows) + "\n"


def markdown(
    figures: list[Figure],
    meta: dict[str, Any],
    judged: bool,
    profiles: dict[str, list[str]],
    profile_files: dict[str, str],
    extras: dict[str, list[float]],
    floors: dict[str, list[float]] | None = None,
    floor_of: dict[str, str] | None = None,
) -> str:
    parts = [
        f"# vidproxy bench ({meta['mode']}, {meta['runs']} run(s) per figure)",
        "",
        f"{meta['date']}; {meta['cpus']} CPUs, load average {meta['load_before']} before and "
        f"{meta['load_after']} after; {meta['versions_line']}.",
        "",
        table(figures, judged),
    ]
    if any(f.cpu_vid for f in figures):
        parts += [
            "## CPU seconds per GiB (user + system from /proc, medians, min-max)",
            "",
            "Floors: bare aiohttp servers (bench/floors.py) measured in the same run. The "
            "baseline's CPU is nginx's worker, or this process for boto3 (the client side).",
            "",
            cpu_table(figures, floors or {}, floor_of or {}),
        ]
    if floors:
        parts += ["Floors, CPU-s/GiB:", ""]
        parts += [f"- {name}: {_spread(values, 'CPU')}" for name, values in floors.items()]
        parts.append("")
    missed = [f for f in figures if f.vid and f.verdict() is False]
    if judged and missed:
        parts.append("## Targets missed, and where the time goes\n")
        for fig in missed:
            parts.append(
                f"- **{fig.title}**: ratio {_ratio(fig.ratios)}, target {fig.target.text}."
            )
            if fig.id in profile_files:
                parts.append(f"  Profile: `{profile_files[fig.id]}`; hottest own time:")
                parts += [f"  - {line}" for line in profiles.get(fig.id, [])]
        parts.append("")
    if extras:
        parts += ["## Diagnostics (median, min-max over the runs)", ""]
        parts += [f"- {name}: {_spread(values, 'ms')}" for name, values in extras.items()]
        parts.append("")
    notes = [n for f in figures for n in f.notes]
    if notes:
        parts += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    return "\n".join(parts)


def write_json(path: Path, figures: list[Figure], meta: dict[str, Any], extra: dict) -> None:
    data = {"meta": meta, "figures": [f.to_json() for f in figures if f.vid or f.cpu_vid], **extra}
    path.write_text(json.dumps(data, indent=2) + "\n")


def write_chart(path: Path, figures: list[Figure], title: str, judged: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [f for f in figures if f.vid]
    fig, ax = plt.subplots(figsize=(11, 0.55 * len(shown) + 1.8))
    for y, f in enumerate(shown):
        ratios = f.ratios
        mid = sorted(ratios)[len(ratios) // 2]
        met = f.verdict()
        color = "#888888" if not judged else ("#2e7d32" if met else "#c62828")
        low, high = mid - min(ratios), max(ratios) - mid
        ax.barh(y, mid, color=color, alpha=0.8, xerr=[[low], [high]], capsize=3)
        ax.plot([f.target.ratio] * 2, [y - 0.4, y + 0.4], color="black", linewidth=2)
        ax.annotate(f" {mid:.3g}", (max(ratios), y), va="center", fontsize=8)
    ax.set_yticks(range(len(shown)), [f"{f.title}\nvs {f.baseline}" for f in shown], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ratios_all = [r for f in shown for r in f.ratios if r > 0 and math.isfinite(r)]
    ax.set_xlim(min([*ratios_all, 0.01]) / 2, max([*ratios_all, 2.0]) * 2)
    ax.axvline(1.0, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xlabel("ratio vidproxy / baseline (median, min-max; black tick: target)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
