"""When the coordinator raises the number of micro-batches (pure; no sockets, no vLLM).

With M micro-batches the chain stays busy as long as a micro-batch comes back
before the slowest stage has worked through the other M - 1: the round trip of
one step (coordinator -> every stage -> coordinator, network included) must
not exceed M steps of the slowest stage. In a saturated pipeline the round
trip settles at about M x the bottleneck step (each micro-batch queues behind
the others there); when links are slow it stays above that and the stages
idle while the steps travel. So the rule is:

    raise M by one when  round_trip > (M + 1) x bottleneck_step
                   and   running requests >= 2 x (M + 1)   (every micro-batch keeps 2)
                   and   M < the cap (--max-micro-batches).

The margin of one whole step keeps M where it is on a LAN, where the round trip
is the sum of the stage steps plus a few milliseconds. M is never lowered: a
larger M only makes the micro-batches smaller, and the next burst of load needs
it again. Both timings are smoothed averages, and decisions are spaced by a
whole window of steps so that each new M is measured before the next change.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Measure:
    """What the rule looks at: smoothed timings and the load right now."""

    round_trip_ms: float  # step sent -> its result back at the coordinator
    bottleneck_step_ms: float  # the slowest chain stage's compute per step
    running: int  # requests running in the scheduler


def wanted_micro_batches(current: int, cap: int, measure: Measure) -> int:
    """`current` + 1 when the rule above says the chain idles, else `current`."""
    if current >= cap:
        return current
    if measure.bottleneck_step_ms <= 0 or measure.round_trip_ms <= 0:
        return current
    if measure.running < 2 * (current + 1):
        return current
    if measure.round_trip_ms > (current + 1) * measure.bottleneck_step_ms:
        return current + 1
    return current


class Smoothed:
    """Exponentially weighted average of a timing; one thread (the caller's) owns it."""

    def __init__(self, weight: float = 0.2) -> None:
        if not 0 < weight <= 1:
            raise ValueError(f"smoothing weight must be in (0, 1], got {weight}")
        self.weight = weight
        self.value = 0.0
        self.samples = 0

    def add(self, sample: float) -> None:
        self.value = (
            sample if self.samples == 0 else ((1 - self.weight) * self.value + self.weight * sample)
        )
        self.samples += 1
