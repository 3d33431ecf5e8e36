"""Time and memory of a stage at a chain position; the most layers it may hold."""

from __future__ import annotations

import math

import pytest

from services.coordinator.placement_costs import ModelProfile, StageCapacity, StageCosts

MODEL = ModelProfile(30, 100, 1, 400, 500, False, head_layers=4.0)


def test_a_step_is_decode_plus_weighted_prefill_plus_head_and_link() -> None:
    costs = StageCosts(MODEL, 10, prefill_weight=0.5)
    s = StageCapacity("a", 10_000, decode_s=2.0, prefill_s=6.0, link_s=1.0)
    assert costs.time(s, 3, last=False) == 3 * (2.0 + 0.5 * 6.0) + 1.0
    assert costs.time(s, 3, last=True) == 3 * 5.0 + 4.0 * 2.0 + 1.0


def test_a_measured_lm_head_replaces_the_estimate() -> None:
    costs = StageCosts(MODEL, 0, prefill_weight=0.0)
    estimated = StageCapacity("a", 10_000, decode_s=2.0, prefill_s=2.0)
    measured = StageCapacity("b", 10_000, decode_s=2.0, prefill_s=2.0, head_s=3.0)
    assert costs.time(estimated, 1, last=True) == 2.0 + 4.0 * 2.0
    assert costs.time(measured, 1, last=True) == 2.0 + 3.0
    assert costs.time(measured, 1, last=False) == 2.0


def test_memory_counts_weights_kv_and_the_ends() -> None:
    costs = StageCosts(MODEL, 10, prefill_weight=0.0)
    assert costs.memory(2, first=False, last=False) == 2 * (100 + 10)
    assert costs.memory(2, first=True, last=True) == 2 * 110 + 400 + 500


def test_the_cap_is_the_tighter_of_memory_and_time() -> None:
    costs = StageCosts(MODEL, 0, prefill_weight=0.0)
    s = StageCapacity("a", 1_000, decode_s=1.0, prefill_s=1.0)
    assert costs.cap(s, math.inf, first=False, last=False) == 10  # memory: 1000 / 100
    assert costs.cap(s, math.inf, first=True, last=False) == 6  # 400 of embeddings first
    assert costs.cap(s, 7.0, first=False, last=False) == 7  # time: 7 layers of 1 s
    assert costs.cap(s, 7.0, first=False, last=True) == 3  # 4 s of LM head
    assert costs.cap(s, 3.9, first=False, last=True) == 0
    assert costs.cap(StageCapacity("b", 300, 1.0, 1.0), math.inf, True, False) == 0


def test_bad_capacities_are_refused() -> None:
    with pytest.raises(ValueError, match="speeds must be > 0"):
        StageCapacity("a", 1, decode_s=0.0, prefill_s=1.0)
    with pytest.raises(ValueError, match="memory must be >= 0"):
        StageCapacity("a", -1, decode_s=1.0, prefill_s=1.0)
