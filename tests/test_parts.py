"""storage/parts.py: multipart part sizes, checked against S3's limits without S3."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vidproxy.s3limits import MAX_OBJECT_SIZE, MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE
from vidproxy.storage.parts import PARTS_PER_STEP, PartPlan, fixed_part_size
from vidproxy.units import GiB, MiB, TiB

ALL_PARTS = range(1, MAX_PARTS + 1)


def total_of(plan: PartPlan) -> int:
    return sum(plan.size_of(n) for n in ALL_PARTS)


def test_unknown_length_starts_at_the_base_size() -> None:
    plan = PartPlan(8 * MiB, None)
    assert [plan.size_of(n) for n in (1, 2, PARTS_PER_STEP)] == [8 * MiB] * 3


def test_unknown_length_doubles_after_each_step() -> None:
    plan = PartPlan(8 * MiB, None)
    assert plan.size_of(PARTS_PER_STEP + 1) == 16 * MiB
    assert plan.size_of(2 * PARTS_PER_STEP + 1) == 32 * MiB


def test_unknown_length_sizes_never_shrink() -> None:
    plan = PartPlan(MIN_PART_SIZE, None)
    sizes = [plan.size_of(n) for n in ALL_PARTS]
    assert sizes == sorted(sizes)


@pytest.mark.parametrize("base", [MIN_PART_SIZE, 8 * MiB, 64 * MiB, 1 * GiB, MAX_PART_SIZE])
def test_every_part_is_within_s3_limits(base: int) -> None:
    for plan in (PartPlan(base, None), PartPlan(base, None, equal_parts=True)):
        sizes = {plan.size_of(n) for n in ALL_PARTS}
        assert min(sizes) >= MIN_PART_SIZE and max(sizes) <= MAX_PART_SIZE


def test_default_part_size_reaches_the_5_tib_object_limit() -> None:
    plan = PartPlan(8 * MiB, None)
    assert total_of(plan) >= MAX_OBJECT_SIZE
    assert plan.capacity() == MAX_OBJECT_SIZE


@pytest.mark.parametrize("base", [MIN_PART_SIZE, 6 * MiB, 8 * MiB, 100 * MiB])
def test_parts_never_limit_an_unknown_length_upload_below_about_5_tib(base: int) -> None:
    # With the 5 MiB minimum the doubling tops out at 5 MiB * 1000 * 1023 ≈ 4.88 TiB.
    assert PartPlan(base, None).capacity() >= 4.8 * TiB


@pytest.mark.parametrize("base", [MIN_PART_SIZE, 8 * MiB, 512 * MiB])
def test_capacity_is_what_10000_parts_carry(base: int) -> None:
    for plan in (PartPlan(base, None), PartPlan(base, None, equal_parts=True)):
        assert plan.capacity() == min(total_of(plan), MAX_OBJECT_SIZE)


def test_equal_parts_keep_the_base_size() -> None:
    plan = PartPlan(8 * MiB, None, equal_parts=True)
    assert {plan.size_of(n) for n in ALL_PARTS} == {8 * MiB}


def test_equal_parts_capacity_is_base_times_max_parts() -> None:
    assert PartPlan(8 * MiB, None, equal_parts=True).capacity() == 8 * MiB * MAX_PARTS


def test_known_small_length_uses_the_base_size() -> None:
    assert PartPlan(8 * MiB, 100 * MiB).size_of(1) == 8 * MiB


def test_known_length_parts_are_all_the_same_size() -> None:
    plan = PartPlan(8 * MiB, 1 * TiB)
    assert {plan.size_of(n) for n in ALL_PARTS} == {fixed_part_size(1 * TiB, 8 * MiB)}


def test_known_length_grows_the_part_to_fit_10000_parts() -> None:
    total = 200 * GiB
    part = PartPlan(8 * MiB, total).size_of(1)
    assert part * MAX_PARTS >= total
    assert (part - MiB) * MAX_PARTS < total  # the smallest whole MiB that fits


def test_known_length_of_5_tib_fits() -> None:
    plan = PartPlan(8 * MiB, MAX_OBJECT_SIZE)
    assert plan.capacity() >= MAX_OBJECT_SIZE
    assert plan.size_of(1) <= MAX_PART_SIZE


@given(
    total=st.integers(min_value=0, max_value=MAX_OBJECT_SIZE),
    base=st.integers(min_value=MIN_PART_SIZE, max_value=MAX_PART_SIZE),
)
def test_fixed_part_size_fits_any_total_in_max_parts(total: int, base: int) -> None:
    part = fixed_part_size(total, base)
    assert base <= part <= MAX_PART_SIZE
    assert part * MAX_PARTS >= total
    assert part == base or part % MiB == 0


@pytest.mark.parametrize("number", [0, -1, MAX_PARTS + 1])
def test_part_numbers_outside_1_to_10000_are_rejected(number: int) -> None:
    with pytest.raises(ValueError):
        PartPlan(8 * MiB, None).size_of(number)
