"""Whether local bytes are what their record says."""

from __future__ import annotations


def size_problem(found: int | None, recorded: int) -> str:
    """What is wrong with a local file of ``found`` bytes (None: missing)."""
    if found is None:
        return f"the data file is missing; {recorded} bytes recorded"
    return f"{found} bytes on disk, {recorded} recorded"
