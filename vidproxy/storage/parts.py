"""Multipart part sizes: pure functions, so the limits can be tested without S3."""

from __future__ import annotations

from dataclasses import dataclass

from ..s3limits import MAX_OBJECT_SIZE, MAX_PART_SIZE, MAX_PARTS
from ..units import MiB

# With an unknown length, part sizes double after every this many parts:
# 8 MiB parts then reach the 5 TiB object limit before part 10,000.
PARTS_PER_STEP = 1_000


@dataclass(frozen=True)
class PartPlan:
    base: int  # part size in bytes before any growth
    known_size: int | None  # the total, when Content-Length gave it
    equal_parts: bool = False

    def size_of(self, part_number: int) -> int:
        """The size of part ``part_number`` (1-based); the last may be shorter."""
        if not 1 <= part_number <= MAX_PARTS:
            raise ValueError(f"part number {part_number} is outside 1..{MAX_PARTS}")
        if self.known_size is not None:
            return fixed_part_size(self.known_size, self.base)
        if self.equal_parts:
            return self.base
        step = (part_number - 1) // PARTS_PER_STEP
        return min(self.base << step, MAX_PART_SIZE)

    def capacity(self) -> int:
        """The most bytes this plan can carry in ``MAX_PARTS`` parts."""
        if self.known_size is not None:
            return min(fixed_part_size(self.known_size, self.base) * MAX_PARTS, MAX_OBJECT_SIZE)
        if self.equal_parts:
            return min(self.base * MAX_PARTS, MAX_OBJECT_SIZE)
        total = sum(
            min(self.base << step, MAX_PART_SIZE) * PARTS_PER_STEP
            for step in range(MAX_PARTS // PARTS_PER_STEP)
        )
        return min(total, MAX_OBJECT_SIZE)


def fixed_part_size(total: int, base: int) -> int:
    """The smallest whole-MiB part size >= ``base`` that fits ``total`` in MAX_PARTS
    parts, capped at S3's largest part (a larger total does not fit at all)."""
    needed = -(-total // MAX_PARTS)
    return min(max(base, -(-needed // MiB) * MiB), MAX_PART_SIZE)
