"""Restart backoff of supervised children."""

from __future__ import annotations

from services.ops.backoff import RestartBackoff


def test_quick_deaths_double_the_delay_up_to_the_cap() -> None:
    backoff = RestartBackoff(initial_s=1.0, max_s=5.0, stable_after_s=60.0)
    assert [backoff.on_death(2.0) for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_a_child_that_ran_long_enough_starts_over() -> None:
    backoff = RestartBackoff(initial_s=1.0, max_s=30.0, stable_after_s=60.0)
    backoff.on_death(1.0)
    backoff.on_death(1.0)
    assert backoff.on_death(61.0) == 1.0
