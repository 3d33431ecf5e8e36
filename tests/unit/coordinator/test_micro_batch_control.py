"""The rule that raises the number of micro-batches (pure logic)."""

from __future__ import annotations

import pytest

from services.coordinator.micro_batch_control import Measure, Smoothed, wanted_micro_batches


def test_lan_round_trip_keeps_m() -> None:
    # Two stages of 80 ms each plus 5 ms of links and coordinator: 165 ms < 3 x 80.
    assert wanted_micro_batches(2, 8, Measure(165.0, 80.0, 64)) == 2


def test_saturated_pipeline_keeps_m() -> None:
    # Four micro-batches queue at an 80 ms stage: each comes back after ~4 steps.
    assert wanted_micro_batches(4, 8, Measure(330.0, 80.0, 128)) == 4


def test_slow_links_raise_m_by_one() -> None:
    # 100 ms per link, three links, two 88 ms stages: 476 ms > 5 x 88.
    assert wanted_micro_batches(4, 8, Measure(476.0, 88.0, 128)) == 5


def test_cap_and_too_few_requests_stop_the_raise() -> None:
    slow = Measure(1000.0, 50.0, 128)
    assert wanted_micro_batches(8, 8, slow) == 8
    # Two requests per micro-batch at least: 5 running cannot feed 3.
    assert wanted_micro_batches(2, 8, Measure(1000.0, 50.0, 5)) == 2
    assert wanted_micro_batches(2, 8, Measure(1000.0, 50.0, 6)) == 3


def test_no_measurement_yet_keeps_m() -> None:
    assert wanted_micro_batches(2, 8, Measure(0.0, 80.0, 64)) == 2
    assert wanted_micro_batches(2, 8, Measure(500.0, 0.0, 64)) == 2


def test_smoothed_starts_at_first_sample_then_averages() -> None:
    s = Smoothed(0.5)
    s.add(100.0)
    assert s.value == 100.0
    s.add(200.0)
    assert s.value == 150.0
    assert s.samples == 2
    with pytest.raises(ValueError, match="weight"):
        Smoothed(0.0)
