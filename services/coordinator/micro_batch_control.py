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
    no chain stage waited for a CPU 5 % of the window or more
    running requests >= 2 x (M + 1)   (every micro-batch keeps at least 2)
    M < the cap (--max-micro-batches).

A stage whose host has fewer cores than busy processes (several stages on one
machine, as in the benchmarks, or other work beside it) spends part of the time
ready to run but waiting for a CPU (services/stage/cpu_wait.py; its heartbeats
carry the total). Between its steps it then looks idle, yet more micro-batches
cannot feed it: the cores are the limit, and each step streams the stage's
weights however few tokens it carries, so smaller micro-batches only cost more
CPU per token. Three stages on two cores at 16 streams: the busy rule alone took
M from 3 to 8, the CPU per output token grew from ~18 ms to ~38 ms and the output
fell from ~95 to ~53 tok/s (docs/benchmark.md, 2026-12-04, session 8).

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
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

# Seconds between two decisions to raise M (each new M is measured first).
RAISE_WINDOW_S = 5.0
BUSY_ENOUGH = 0.85  # a bottleneck stage this busy is fed well enough
BUSY_AIM = 0.95  # a raise is sized to make the busiest stage this busy
# A stage waiting for a CPU this share of the window is starved. A stage with a host of
# its own waits ~1 % (its own threads, the OS); three stages on two cores at M = 3 waited
# 8-21 % (the most waiting stage of each 5 s window), and at 10 % the rule still let
# quiet windows raise M to 4, which cost ~15 % of the throughput there.
CPU_WAIT_LIMIT = 0.05


@dataclass(frozen=True)
class Measure:
    """What the rule looks at, averaged over one window (running: right now)."""

    in_flight: float  # time-averaged micro-batches in flight (steps carrying tokens)
    busiest_stage: float  # the busiest chain stage's compute share of the window, 0..1
    running: int  # requests running in the scheduler
    cpu_wait: float = 0.0  # the largest share of the window a chain stage waited for a CPU


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
    if measure.cpu_wait >= CPU_WAIT_LIMIT:
        return current  # the stages are short of cores, not of work
    proportional = math.ceil(current * BUSY_AIM / measure.busiest_stage)
    return max(current + 1, min(proportional, cap, measure.running // 2))


def micro_batch_range(stages: int, fixed: int, cap: int) -> tuple[int, int]:
    """M to start with and the most it may be raised to.

    `fixed` (--micro-batches) when set; else one per stage, raised while serving
    up to `cap` (--max-micro-batches; default 4 per stage, and a single stage has
    nothing to overlap).
    """
    if fixed:
        return fixed, fixed
    if cap:
        return stages, max(stages, cap)
    return stages, 4 * stages if stages > 1 else 1


class BeatingStage(Protocol):
    """A chain stage (registry.py's StageRecord) as the window reads it on the engine thread."""

    name: str
    beat: Any  # the last wire.Heartbeat (cumulative busy_s and cpu_wait_s), or None
    beat_at: float  # when it arrived (monotonic)


class RaiseWindow:
    """Each chain stage's busy time and CPU wait when the current window began; engine
    thread only."""

    def __init__(self) -> None:
        self.start = 0.0
        self.beats: dict[str, tuple[float, float, float]] = {}  # busy_s, cpu_wait_s, at

    def due(self, now: float) -> bool:
        """Whether the window has run RAISE_WINDOW_S (the first one is due at once)."""
        return now - self.start >= RAISE_WINDOW_S

    def _largest_share(self, chain: Iterable[BeatingStage], field: int) -> float:
        largest = 0.0
        for r in chain:
            start = self.beats.get(r.name)
            if r.beat is not None and start is not None and r.beat_at - start[2] > 0.5:
                now = (r.beat.busy_s, r.beat.cpu_wait_s)[field]
                largest = max(largest, (now - start[field]) / (r.beat_at - start[2]))
        return largest

    def busiest_share(self, chain: Iterable[BeatingStage]) -> float:
        """The busiest stage's compute share since the window began; 0 without two beats."""
        return self._largest_share(chain, 0)

    def cpu_wait_share(self, chain: Iterable[BeatingStage]) -> float:
        """The largest share of the window a stage waited for a CPU; 0 without two beats."""
        return self._largest_share(chain, 1)

    def restart(self, now: float, chain: Iterable[BeatingStage]) -> None:
        self.start = now
        self.beats = {
            r.name: (r.beat.busy_s, r.beat.cpu_wait_s, r.beat_at)
            for r in chain
            if r.beat is not None
        }


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
