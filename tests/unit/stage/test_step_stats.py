"""Step counters the heartbeats carry (services/stage/step_stats.py)."""

from __future__ import annotations

import pytest

from services.stage.step_stats import StepStats


def test_steps_add_up_and_recent_step_time_follows_the_latest() -> None:
    stats = StepStats()
    stats.record(0.010)
    assert (stats.steps, stats.busy_s) == (1, pytest.approx(0.010))
    assert stats.recent_step_ms == pytest.approx(2.0)  # a fifth of the first 10 ms
    for _ in range(60):
        stats.record(0.030)
    assert stats.steps == 61
    assert stats.busy_s == pytest.approx(0.010 + 60 * 0.030)
    assert stats.recent_step_ms == pytest.approx(30.0, rel=1e-3)
