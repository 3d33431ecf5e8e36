"""What a stage's heartbeats report about its steps (pure).

The coordinator reads `busy_s` growth against wall time to see how much of
the time the busiest stage computes (micro_batch_control.py); `/status` shows
`steps` and `recent_step_ms`.
"""

from __future__ import annotations


class StepStats:
    """Steps run and compute time; the main thread writes, the heartbeat thread reads."""

    def __init__(self) -> None:
        self.steps = 0
        self.busy_s = 0.0
        self.recent_step_ms = 0.0

    def record(self, elapsed_s: float) -> None:
        """One step (run or failed) took elapsed_s on this stage's layers."""
        self.steps += 1
        self.busy_s += elapsed_s
        # A moving average: the newest step weighs a fifth.
        self.recent_step_ms = 0.8 * self.recent_step_ms + 0.2 * elapsed_s * 1000
