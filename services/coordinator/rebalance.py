"""When a better split is worth reloading stages: hysteresis for placement (pure logic).

A stage that joins a full chain waits as a standby. The coordinator moves stages onto
a better split only when the predicted step time drops by at least `min_gain` (a
reload interrupts every stream for about a stage's load time) and never sooner than
`interval_s` after the chain last changed (start, rebuild or rebalance).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RebalancePolicy:
    """The thresholds of a rebalance (immutable settings)."""

    min_gain: float  # share by which the predicted step must drop, e.g. 0.2
    interval_s: float  # at least this long after the chain last changed

    def verdict(self, now: float, changed_at: float, current_s: float, better_s: float) -> str:
        """"" to rebalance now, else why not (for the log); why to, as `reason()` says."""
        gain = 1.0 - better_s / current_s if current_s > 0 else 0.0
        if gain < self.min_gain:
            return (
                f"a new split would cut the predicted step only {gain:.0%} "
                f"({current_s * 1000:.2f} -> {better_s * 1000:.2f} ms), below "
                f"--rebalance-min-gain {self.min_gain:.0%}"
            )
        wait = self.interval_s - (now - changed_at)
        if wait > 0:
            return (
                f"a new split would cut the predicted step {gain:.0%}; rebalancing in "
                f"{wait:.0f} s at the earliest (--rebalance-interval-s {self.interval_s:g})"
            )
        return ""

    @staticmethod
    def reason(current_s: float, better_s: float) -> str:
        gain = 1.0 - better_s / current_s if current_s > 0 else 0.0
        return (
            f"rebalancing: a new split cuts the predicted step {gain:.0%} "
            f"({current_s * 1000:.2f} -> {better_s * 1000:.2f} ms)"
        )
