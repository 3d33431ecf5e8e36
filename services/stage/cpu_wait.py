"""Seconds the stage's main thread spent ready to run but waiting for a CPU (Linux).

A stage whose host has fewer free cores than busy processes (several stages on one
machine, or other work beside it) waits in the kernel's run queue. Its forward time
then grows, yet between steps it looks idle to the coordinator, which would add
micro-batches that only cost more work per token. The heartbeats carry this wait
(cumulative, like busy_s), so the coordinator's micro-batch control
(services/coordinator/micro_batch_control.py) can tell a starved chain from an idle
one. The kernel keeps it per thread in /proc/<pid>/task/<tid>/schedstat: time on a
CPU, time waiting on a run queue (ns), time slices. Without that file (another OS,
or a kernel without schedstats) the wait reads 0.
"""

from __future__ import annotations

import os
import threading


def run_queue_wait_s(schedstat: str) -> float:
    """The run-queue wait, in seconds, from a schedstat line ("<on cpu> <waiting> <slices>")."""
    fields = schedstat.split()
    if len(fields) < 2 or not fields[1].isdigit():
        raise ValueError(f"not a schedstat line: {schedstat!r}")
    return int(fields[1]) / 1e9


class CpuWait:
    """The run-queue wait of the thread that created it; made on the stage's main thread,
    read on the heartbeat thread."""

    def __init__(self, proc: str = "/proc") -> None:
        self.path = f"{proc}/{os.getpid()}/task/{threading.get_native_id()}/schedstat"

    def seconds(self) -> float:
        """Cumulative seconds so far; 0.0 where the kernel does not tell."""
        try:
            with open(self.path) as f:
                return run_queue_wait_s(f.read())
        except (OSError, ValueError):
            return 0.0
