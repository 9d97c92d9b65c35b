"""The cache's clocks: the system's, and the manual one its tests move."""

from __future__ import annotations

import asyncio

import pytest
from manual_clock import ManualClock

from vidproxy.cache.clock import Clock, SystemClock


async def test_the_system_clock_calls_back_on_the_running_loop() -> None:
    clock: Clock = SystemClock()
    called = asyncio.Event()
    cancelled: list[str] = []

    clock.call_later(0.0, lambda: cancelled.append("ran")).cancel()
    clock.call_later(0.01, called.set)  # after the cancelled one was due
    await asyncio.wait_for(called.wait(), timeout=5.0)

    assert cancelled == []


def test_the_manual_clock_runs_each_due_timer_at_its_own_moment() -> None:
    clock = ManualClock()
    start = clock.monotonic()
    ran: list[tuple[str, float]] = []

    def note(name: str) -> None:
        ran.append((name, clock.monotonic() - start))

    clock.call_later(20, lambda: note("b"))
    clock.call_later(10, lambda: note("a"))
    clock.call_later(15, lambda: note("cancelled")).cancel()
    clock.call_later(30, lambda: note("later"))

    def set_another() -> None:
        clock.call_later(1, lambda: note("chained"))

    # A timer set by a timer runs within the same advance if it falls due in it.
    clock.call_later(5, set_another)

    clock.advance(25)

    assert [name for name, _ in ran] == ["chained", "a", "b"]
    assert [at for _, at in ran] == pytest.approx([6, 10, 20])
    assert clock.monotonic() - start == pytest.approx(25)
    assert clock.pending == 1


def test_the_manual_clocks_move_together() -> None:
    clock = ManualClock()
    wall, monotonic = clock.now(), clock.monotonic()

    clock.advance(90.5)

    assert clock.now() - wall == pytest.approx(90.5)
    assert clock.monotonic() - monotonic == pytest.approx(90.5)
