"""When the coordinator raises the number of micro-batches (pure; no sockets, no vLLM).

M micro-batches keep the chain busy as long as one comes back before the
slowest stage has worked through the others. When the links are slow (a WAN),
the steps spend their time travelling: all M micro-batches are in flight, yet
the stages idle. When the coordinator is the slow part, fewer than M are in
flight, and more micro-batches would not help. So, over a window of a few
seconds, the coordinator looks at

- the time-averaged number of micro-batches in flight (steps with tokens), and
- the busiest chain stage's busy share (compute time / wall time, from the
  cumulative `busy_s` in its heartbeats),

and raises M when

    in flight >= M - 0.5   (the chain, not the coordinator, holds the work)
    busiest stage < 85 % busy
    running requests >= 2 x (M + 1)   (every micro-batch keeps at least 2)
    M < the cap (--max-micro-batches).

While the steps travel, a stage's busy share grows about in proportion to M
(each micro-batch brings the same work per round trip), so the raise is sized
in one go: to ceil(M x 95 % / busiest share), at least M + 1, at most the cap
and running / 2. Behind 100 ms links with the busiest stage 33 % busy at
M = 2, M goes to 6 in one window instead of one step per window; the next
window corrects what the proportion missed (smaller micro-batches cost a
little more per token).

On a LAN the busiest stage works ~90 % of the time at M = stages, so M stays.
M is never lowered: a larger M only makes the micro-batches smaller, and the
next burst of load needs it again. Each window starts after the last change,
so every new M is measured before the next one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

BUSY_ENOUGH = 0.85  # a bottleneck stage this busy is fed well enough
BUSY_AIM = 0.95  # a raise is sized to make the busiest stage this busy


@dataclass(frozen=True)
class Measure:
    """What the rule looks at, averaged over one window (running: right now)."""

    in_flight: float  # time-averaged micro-batches in flight (steps carrying tokens)
    busiest_stage: float  # the busiest chain stage's compute share of the window, 0..1
    running: int  # requests running in the scheduler


def wanted_micro_batches(current: int, cap: int, measure: Measure) -> int:
    """A larger M when the rule above says the chain idles for want of work, else `current`."""
    if current >= cap:
        return current
    if measure.running < 2 * (current + 1):
        return current
    if measure.in_flight < current - 0.5:
        return current
    if not 0.0 < measure.busiest_stage < BUSY_ENOUGH:
        return current  # 0: no heartbeat in the window yet
    proportional = math.ceil(current * BUSY_AIM / measure.busiest_stage)
    return max(current + 1, min(proportional, cap, measure.running // 2))


class TimeAverage:
    """Time-weighted average of a level that changes in steps; callers serialise access."""

    def __init__(self, now: float) -> None:
        self.level = 0.0
        self._since = now
        self._area = 0.0
        self._start = now

    def set(self, level: float, now: float) -> None:
        self._area += self.level * max(0.0, now - self._since)
        self.level, self._since = level, now

    def take(self, now: float) -> float:
        """The average since the last take (or creation), and start a new window."""
        self.set(self.level, now)
        span = now - self._start
        average = self._area / span if span > 0 else self.level
        self._area, self._start = 0.0, now
        return average
