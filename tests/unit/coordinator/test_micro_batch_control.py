"""The rule that raises the number of micro-batches (pure logic)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from services.coordinator.micro_batch_control import (
    CPU_WAIT_LIMIT,
    RAISE_WINDOW_S,
    Measure,
    RaiseWindow,
    TimeAverage,
    micro_batch_range,
    wanted_micro_batches,
)


def test_lan_keeps_m_while_the_busiest_stage_is_busy() -> None:
    # Two micro-batches in flight, the busiest stage computes 92% of the time.
    assert wanted_micro_batches(2, 8, Measure(1.9, 0.92, 64)) == 2


def test_slow_links_raise_m_in_proportion_to_the_idle_share() -> None:
    # All four in flight, yet the stages wait for steps on the wire 40% of the time:
    # 4 x 0.95 / 0.6 = 6.3, so 7 micro-batches should keep the busiest stage busy.
    assert wanted_micro_batches(4, 8, Measure(3.9, 0.6, 128)) == 7
    # Behind 100 ms links at the start of a load: 2 x 0.95 / 0.33 = 5.8.
    assert wanted_micro_batches(2, 8, Measure(2.0, 0.33, 128)) == 6


def test_a_nearly_busy_stage_still_gets_one_more() -> None:
    # 0.95 / 0.84 rounds up to the current M: the raise is at least one.
    assert wanted_micro_batches(6, 8, Measure(6.0, 0.84, 128)) == 7


def test_a_slow_coordinator_does_not_raise_m() -> None:
    # Stages idle, but the micro-batches are not in flight: more would not help.
    assert wanted_micro_batches(4, 8, Measure(2.5, 0.5, 128)) == 4


def test_cap_and_too_few_requests_stop_the_raise() -> None:
    assert wanted_micro_batches(8, 8, Measure(8.0, 0.3, 128)) == 8
    # Two requests per micro-batch at least: 5 running cannot feed 3.
    assert wanted_micro_batches(2, 8, Measure(2.0, 0.3, 5)) == 2
    assert wanted_micro_batches(2, 8, Measure(2.0, 0.3, 6)) == 3
    # The proportional raise is bounded by the cap and by running / 2.
    assert wanted_micro_batches(2, 8, Measure(2.0, 0.1, 128)) == 8
    assert wanted_micro_batches(2, 8, Measure(2.0, 0.1, 10)) == 5


def test_a_stage_waiting_for_a_cpu_keeps_m() -> None:
    # The busy rule alone would raise 3 -> 5 (70 % busy); a stage that waited for a CPU
    # a twentieth of the window or more shares its cores: more micro-batches cannot feed it.
    assert wanted_micro_batches(3, 12, Measure(3.0, 0.7, 16, cpu_wait=0.0)) == 5
    assert wanted_micro_batches(3, 12, Measure(3.0, 0.7, 16, cpu_wait=0.04)) == 5
    assert wanted_micro_batches(3, 12, Measure(3.0, 0.7, 16, cpu_wait=CPU_WAIT_LIMIT)) == 3
    assert wanted_micro_batches(3, 12, Measure(3.0, 0.7, 16, cpu_wait=0.4)) == 3


def test_no_heartbeat_in_the_window_keeps_m() -> None:
    assert wanted_micro_batches(2, 8, Measure(2.0, 0.0, 64)) == 2


def test_time_average_weights_levels_by_duration() -> None:
    avg = TimeAverage(now=0.0)
    avg.set(2, now=1.0)  # 0 for 1 s
    avg.set(1, now=4.0)  # 2 for 3 s
    assert avg.take(now=5.0) == pytest.approx((0 * 1 + 2 * 3 + 1 * 1) / 5)
    # A new window starts at the take, at the level reached.
    assert avg.take(now=7.0) == pytest.approx(1.0)


def test_m_starts_fixed_or_at_one_per_stage_with_its_cap() -> None:
    assert micro_batch_range(stages=3, fixed=5, cap=0) == (5, 5)
    assert micro_batch_range(stages=3, fixed=5, cap=12) == (5, 5)
    assert micro_batch_range(stages=3, fixed=0, cap=8) == (3, 8)
    assert micro_batch_range(stages=3, fixed=0, cap=2) == (3, 3)  # never below one per stage
    assert micro_batch_range(stages=2, fixed=0, cap=0) == (2, 8)
    assert micro_batch_range(stages=1, fixed=0, cap=0) == (1, 1)  # nothing to overlap


class Stage:
    """A chain stage's name and last heartbeat, as the window reads them."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.beat: Any = None
        self.beat_at = 0.0

    def beats(self, busy_s: float, at: float, cpu_wait_s: float = 0.0) -> None:
        self.beat = SimpleNamespace(busy_s=busy_s, cpu_wait_s=cpu_wait_s)
        self.beat_at = at


def test_the_window_measures_the_busiest_stage_since_it_began() -> None:
    a, b, late = Stage("a"), Stage("b"), Stage("late")
    a.beats(10.0, at=100.0)
    b.beats(20.0, at=100.2)
    window = RaiseWindow()
    assert window.due(now=100.0)  # the first window is due at once
    window.restart(100.5, [a, b, late])
    assert not window.due(now=100.5 + RAISE_WINDOW_S - 0.1)
    assert window.due(now=100.5 + RAISE_WINDOW_S)
    a.beats(12.0, at=105.0)  # 2 s of 5
    b.beats(23.0, at=105.2)  # 3 s of 5
    late.beats(50.0, at=105.0)  # no beat when the window began: not counted
    assert window.busiest_share([a, b, late]) == pytest.approx(0.6)


def test_the_window_measures_the_longest_wait_for_a_cpu() -> None:
    a, b = Stage("a"), Stage("b")
    a.beats(10.0, at=100.0, cpu_wait_s=4.0)
    b.beats(20.0, at=100.0, cpu_wait_s=1.0)
    window = RaiseWindow()
    window.restart(100.0, [a, b])
    a.beats(13.0, at=105.0, cpu_wait_s=4.2)  # waited 0.2 s of 5
    b.beats(21.0, at=105.0, cpu_wait_s=1.9)  # waited 0.9 s of 5
    assert window.cpu_wait_share([a, b]) == pytest.approx(0.18)
    assert window.busiest_share([a, b]) == pytest.approx(0.6)


def test_a_window_without_a_second_beat_measures_nothing() -> None:
    a = Stage("a")
    a.beats(10.0, at=100.0)
    window = RaiseWindow()
    window.restart(100.0, [a])
    a.beats(10.4, at=100.4)  # under half a second apart: too short to tell
    assert window.busiest_share([a]) == 0.0
