"""The rebalance policy: a gain worth a reload, and never too soon after a change."""

from __future__ import annotations

from services.coordinator.rebalance import RebalancePolicy

POLICY = RebalancePolicy(min_gain=0.2, interval_s=600.0)


def test_a_small_gain_is_not_worth_a_reload() -> None:
    why = POLICY.verdict(now=10_000.0, changed_at=0.0, current_s=0.100, better_s=0.090)
    assert "only 10%" in why and "--rebalance-min-gain 20%" in why


def test_a_worthy_gain_waits_for_the_interval_then_goes() -> None:
    early = POLICY.verdict(now=100.0, changed_at=0.0, current_s=0.100, better_s=0.060)
    assert "40%" in early and "in 500 s" in early and "--rebalance-interval-s 600" in early
    assert POLICY.verdict(now=600.0, changed_at=0.0, current_s=0.100, better_s=0.060) == ""
    assert "40%" in POLICY.reason(0.100, 0.060)


def test_exactly_the_threshold_rebalances() -> None:
    assert POLICY.verdict(now=601.0, changed_at=0.0, current_s=0.100, better_s=0.080) == ""
